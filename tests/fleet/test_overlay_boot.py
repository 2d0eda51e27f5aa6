"""root.mode=overlay: two boards boot at once from one read-only golden export.

Real QEMU 7.2 (-M sabrelite) x2 against ``appliance serve`` (real qemu-nbd -r, TLS-PSK,
a key per board).  The golden image is the built root plus an ``/etc/rc.local`` (the
root's site hook) that writes a file named after a random id into ``/``, waits, and
prints which such files it sees.  Each board mounts the export read-only under an
overlayfs with a tmpfs upper: each must see exactly its own file, not the other's; the
golden image's SHA-256 is unchanged.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.host.demo import ROOT_OK
from image.qemu import QemuBoard
from tests.image_artefacts import built_image_dir, debugfs

from .conftest import Serve, appliance, sha256, start_board

pytestmark = [pytest.mark.slow, pytest.mark.system, pytest.mark.interop]

BOOT_TIMEOUT = 400.0
OVERLAY = {"root.mode": "overlay", "root.overlay-size": "64M"}
RC_LOCAL = """#!/bin/sh
id=$(cat /proc/sys/kernel/random/uuid)
echo "$id" > "/fleet-mark-$id" && sync
echo "fleet-wrote: $id"
sleep 40
echo "fleet-sees: $(cd / && echo fleet-mark-*)"
"""
SEES = re.compile(rb"fleet-sees: ([^\r\n]*)\r?\n")
WROTE = re.compile(rb"fleet-wrote: (\S+)\r?\n")




def golden_with_hook(out: Path, dest: Path, tmp: Path, rc_local: str = RC_LOCAL) -> Path:
    subprocess.run(["cp", "--sparse=always", str(out / "rootfs.ext4"), str(dest)], check=True,
                   timeout=120)
    hook = tmp / "rc.local"
    hook.write_text(rc_local)
    debugfs(dest, f"write {hook} /etc/rc.local", write=True)
    debugfs(dest, "sif /etc/rc.local mode 0100755", write=True)
    return dest


def test_two_overlay_boards_share_one_read_only_golden(tmp_path: Path, fleet: Path,
                                                       serving: Callable[[], Serve]) -> None:
    out = built_image_dir()
    image = golden_with_hook(out, tmp_path / "golden-hook.ext4", tmp_path)
    assert appliance("golden", "import", str(image), fleet=fleet).returncode == 0  # version 2
    for name in ("a", "b"):
        r = appliance("fleet", "add", name, "--golden", "2", "--root-mode", "overlay",
                      fleet=fleet)
        assert r.returncode == 0 and "--set root.mode=overlay" in r.stdout, r.stdout
    golden = fleet / "golden" / "2" / "image.raw"
    before = sha256(golden)
    s = serving()
    boards: list[QemuBoard] = []
    try:
        for slot, name in enumerate("ab"):
            boards.append(start_board(out, fleet, s, slot, name, tmp_path / name,
                                      **OVERLAY))
        wrote, seen = [], []
        for board in boards:
            board.expect(ROOT_OK.pattern, BOOT_TIMEOUT)
            wrote.append(board.expect(WROTE.pattern, 120).group(1).decode())
        for board in boards:
            seen.append(board.expect(SEES.pattern, 120).group(1).decode().split())
    finally:
        for board in boards:
            board.stop()
    assert wrote[0] != wrote[1]
    assert seen == [[f"fleet-mark-{wrote[0]}"], [f"fleet-mark-{wrote[1]}"]], (wrote, seen)
    s.stop()
    assert sha256(golden) == before
