"""``appliance nbd`` against Debian's nbd-server 3.24, the third interop server beside
qemu-nbd and nbdkit: simple replies only, no TLS, no block-size info, no extents."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.interop.util import appliance, one_line_error, tool

pytestmark = pytest.mark.interop

MiB = 1 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """8 MiB: 1 MiB of data, 2 MiB of written zeroes, a hole, 4 KiB of data at the end."""
    path = tmp_path / "disk.img"
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
        f.write(os.urandom(MiB))
        f.write(bytes(2 * MiB))
        f.seek(8 * MiB - 4096)
        f.write(os.urandom(4096))
    return path


def test_info_agrees_with_nbdinfo(nbd_servers, image: Path) -> None:
    srv = nbd_servers.nbd_server(image)
    r = appliance("nbd", "info", "--json", srv.uri())
    assert r.returncode == 0, r.stderr
    ours = json.loads(r.stdout)
    theirs = json.loads(tool("nbdinfo", "--json", srv.uri()).stdout)
    assert ours["protocol"] == theirs["protocol"] == "newstyle-fixed"
    assert ours["structured"] is theirs["structured"] is False
    a, b = ours["exports"][0], theirs["exports"][0]
    assert a["export-size"] == image.stat().st_size  # (nbdinfo's NBD_OPT_INFO reads 0 here)
    for key, value in b.items():
        if key.startswith(("is_", "can_")):
            assert a[key] == value, key
    assert a["contexts"] == [] and "block_size_maximum" not in a
    assert [e["export-name"] for e in json.loads(
        appliance("nbd", "info", "--list", "--json", srv.uri()).stdout)["exports"]] == ["disk"]


def test_copy_out_matches_nbdcopy_bytes_and_allocation(nbd_servers, image: Path,
                                                       tmp_path: Path) -> None:
    srv = nbd_servers.nbd_server(image, read_only=True)
    ours, theirs = tmp_path / "ours.img", tmp_path / "theirs.img"
    r = appliance("nbd", "copy", srv.uri(), str(ours))
    assert r.returncode == 0, r.stderr
    tool("nbdcopy", srv.uri(), str(theirs))
    assert ours.read_bytes() == theirs.read_bytes() == image.read_bytes()
    # no extents from nbd-server: the zeroes are found in the data, as nbdcopy -S does
    assert abs(ours.stat().st_blocks - theirs.stat().st_blocks) * 512 <= 64 << 10
    assert ours.stat().st_blocks * 512 < 2 * MiB


def test_copy_in_and_back(nbd_servers, image: Path, tmp_path: Path) -> None:
    target = tmp_path / "target.img"
    target.write_bytes(os.urandom(8 * MiB))  # old data that the holes must overwrite
    srv = nbd_servers.nbd_server(target)
    r = appliance("nbd", "copy", str(image), srv.uri())
    assert r.returncode == 0, r.stderr
    back = tmp_path / "back.img"
    tool("nbdcopy", srv.uri(), str(back))
    assert back.read_bytes() == image.read_bytes()


def test_map_says_there_are_no_contexts(nbd_servers, image: Path) -> None:
    srv = nbd_servers.nbd_server(image)
    assert "structured replies" in one_line_error(appliance("nbd", "info", "--map", srv.uri()))
