"""Two boards provisioned by ``appliance fleet`` boot at once from ``appliance serve``.

Real QEMU 7.2 (-M sabrelite) x2, the real image as a golden version, real qemu-nbd with
TLS-PSK on 127.0.0.1 started by ``appliance serve``.  Each board is configured with its
own identity, key and URI as ``fleet add`` makes them (through the boot's config
archive, as ``appliance demo`` does: QEMU 7.2's UART drops console input).  Both reach
their NBD root through the relay; serve logs each board's connections; the golden
image's SHA-256 is unchanged and each board's writes landed in its own overlay.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.host.demo import ROOT_OK
from tests.image_artefacts import built_image_dir

from .conftest import Serve, appliance, sha256, start_board

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.interop]

BOOT_TIMEOUT = 400.0  # two TCG guests on a loaded 2-core runner




def test_two_fleet_boards_boot_from_appliance_serve(tmp_path: Path, fleet: Path,
                                                    serving: Callable[[], Serve]) -> None:
    out = built_image_dir()
    # golden 1 is the fixture's small image; the real root becomes version 2
    assert appliance("golden", "import", str(out / "rootfs.ext4"), fleet=fleet).returncode == 0
    for name in ("a", "b"):
        assert appliance("fleet", "add", name, "--golden", "2", fleet=fleet).returncode == 0
    golden = fleet / "golden" / "2" / "image.raw"
    before = sha256(golden)
    overlay_sizes = {n: (fleet / "boards" / n / "root.qcow2").stat().st_size for n in "ab"}
    s = serving()
    boards = []
    try:
        for slot, name in enumerate("ab"):
            boards.append(start_board(out, fleet, s, slot, name, tmp_path / name))
        for board in boards:
            board.expect(ROOT_OK.pattern, BOOT_TIMEOUT)
    finally:
        for board in boards:
            board.stop()
    for name in "ab":
        s.wait_line(lambda line, n=name: line.startswith(f"serve: {n}: connected"))  # type: ignore[misc]
    s.stop()
    assert sha256(golden) == before
    for name in "ab":
        assert (fleet / "boards" / name / "root.qcow2").stat().st_size > overlay_sizes[name]
