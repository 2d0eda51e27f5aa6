"""``appliance nbd info|list|copy`` as a user runs them, against qemu-nbd and nbdkit,
checked against nbdinfo and nbdcopy on the same servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import servers
from tests.interop.util import appliance, merged_map, nbdinfo_map, tool

pytestmark = pytest.mark.interop

SIZE = 16 << 20


@pytest.fixture
def qcow2_with_holes(tmp_path: Path) -> Path:
    writes = ((0, os.urandom(4096)), (3 << 20, os.urandom(1 << 20)), (SIZE - 512, b"E" * 512))
    return servers.make_image(tmp_path / "src.qcow2", SIZE, fmt="qcow2", writes=writes)


def test_info_json_agrees_with_nbdinfo(nbd_servers, psk_file, qcow2_with_holes) -> None:
    srv = nbd_servers.qemu_nbd(qcow2_with_holes, fmt="qcow2", psk_file=psk_file,
                               description="test disk", allocation_depth=True)
    r = appliance("nbd", "info", "--json", srv.uri())
    assert r.returncode == 0, r.stderr
    ours = json.loads(r.stdout)
    theirs = json.loads(tool("nbdinfo", "--json", srv.uri()).stdout)
    assert ours["TLS"] is theirs["TLS"] is True
    assert ours["structured"] is theirs["structured"]
    a, b = ours["exports"][0], theirs["exports"][0]
    for key, value in b.items():
        if key in ("content", "export-size-str"):
            continue
        assert a[key] == value if key != "contexts" else set(a[key]) == set(value), key


def test_info_text_and_list(nbd_servers, psk_file, qcow2_with_holes) -> None:
    srv = nbd_servers.qemu_nbd(qcow2_with_holes, fmt="qcow2", psk_file=psk_file,
                               export="root", description="the root disk")
    r = appliance("nbd", "info", srv.uri())
    assert r.returncode == 0, r.stderr
    assert "protocol: newstyle-fixed with TLS, using structured packets" in r.stdout
    assert f"export-size: {SIZE} (16M)" in r.stdout
    r = appliance("nbd", "list", srv.uri(""))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[0] == "root\tthe root disk"
    r = appliance("nbd", "info", "--list", "--json", srv.uri())
    assert [e["export-name"] for e in json.loads(r.stdout)["exports"]] == ["root"]


@pytest.mark.parametrize("context", ["base:allocation", "qemu:allocation-depth"])
def test_map_agrees_with_nbdinfo(nbd_servers, psk_file, qcow2_with_holes, context) -> None:
    srv = nbd_servers.qemu_nbd(qcow2_with_holes, fmt="qcow2", psk_file=psk_file,
                               allocation_depth=True)
    r = appliance("nbd", "info", "--json", f"--map={context}", srv.uri())
    assert r.returncode == 0, r.stderr
    assert merged_map(json.loads(r.stdout)) == nbdinfo_map(srv.uri(), context)
    text = appliance("nbd", "info", f"--map={context}", srv.uri()).stdout
    assert len(text.splitlines()) == len(merged_map(json.loads(r.stdout)))


def same_map_bytes(uri: str, context: str = "base:allocation") -> int:
    """``info --map`` prints what nbdinfo prints, byte for byte, as text and as JSON;
    returns the number of rows."""
    for extra in ((), ("--json",)):
        ours = appliance("nbd", "info", *extra, f"--map={context}", uri)
        assert ours.returncode == 0, ours.stderr
        assert ours.stdout == tool("nbdinfo", *extra, f"--map={context}", uri).stdout, extra
    return len(ours.stdout.splitlines()) - 2


def test_map_bytes_are_nbdinfo_s(nbd_servers, psk_file, tmp_path) -> None:
    """Every context qemu-nbd offers, on a qcow2 with data, holes and a dirty bitmap."""
    img = servers.make_image(tmp_path / "src.qcow2", SIZE, fmt="qcow2",
                             writes=((0, os.urandom(4096)), (5 << 20, b"D" * 65536)))
    servers.add_bitmap(img, "b0")
    servers.qemu_io_write(img, "qcow2", 7 << 20, b"z" * 65536)
    srv = nbd_servers.qemu_nbd(img, fmt="qcow2", allocation_depth=True, bitmap="b0",
                               psk_file=psk_file)
    for context in ("base:allocation", "qemu:allocation-depth", "qemu:dirty-bitmap:b0"):
        assert same_map_bytes(srv.uri(), context) > 1, context


def test_map_bytes_many_windows(nbd_servers) -> None:
    """A map of several block-status windows (1 GiB each): offsets of ten digits and
    more, and runs that a window boundary cuts in two, which both tools merge."""
    srv = nbd_servers.nbdkit("sparse-random", "size=3G", "percent=30", "runlength=4194304",
                             "seed=7")
    assert same_map_bytes(srv.uri()) > 100


def copy_both(src_uri: str, tmp: Path, *extra: str) -> tuple[bytes, Path]:
    ours, theirs = tmp / "ours.img", tmp / "theirs.img"
    r = appliance("nbd", "copy", *extra, src_uri, str(ours))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    tool("nbdcopy", src_uri, str(theirs))
    data = ours.read_bytes()
    assert data == theirs.read_bytes()
    return data, ours


def test_copy_qcow2_with_holes_matches_nbdcopy(nbd_servers, psk_file, qcow2_with_holes,
                                               tmp_path) -> None:
    srv = nbd_servers.qemu_nbd(qcow2_with_holes, fmt="qcow2", psk_file=psk_file)
    data, ours = copy_both(srv.uri(), tmp_path)
    assert len(data) == SIZE and data[SIZE - 512:] == b"E" * 512
    assert ours.stat().st_blocks * 512 < SIZE // 2  # holes stayed holes


@pytest.mark.parametrize(("plugin", "args"), [
    ("sparse-random", ("size=64M", "seed=7", "percent=20", "runlength=1048576")),
    ("pattern", ("size=24M",)),
    ("data", ("data=1 2 3 @0x100000 0x41 0x42 @0x5ffffe 9 9", "size=6M")),
    ("memory", ("size=8M",)),
])
@pytest.mark.parametrize("connections", ["1", "4"])
def test_copy_nbdkit_plugins_match_nbdcopy(nbd_servers, psk_file, tmp_path, plugin, args,
                                           connections) -> None:
    srv = nbd_servers.nbdkit(plugin, *args, psk_file=psk_file)
    copy_both(srv.uri(), tmp_path, "--connections", connections, "--request-size", "64K")


def test_copy_file_to_nbd_to_stdout(nbd_servers, psk_file, tmp_path) -> None:
    src = tmp_path / "in.img"
    src.write_bytes(os.urandom(3 << 20) + bytes(2 << 20) + b"tail")
    dst = nbd_servers.nbdkit("memory", "size=8M", psk_file=psk_file)
    r = appliance("nbd", "copy", str(src), dst.uri())
    assert r.returncode == 0, r.stderr
    tool("nbdcopy", dst.uri(), str(tmp_path / "back.img"))
    assert (tmp_path / "back.img").read_bytes()[:src.stat().st_size] == src.read_bytes()
    piped = tmp_path / "piped.img"
    with open(piped, "wb") as f:
        r = subprocess.run([sys.executable, "-m", "appliance", "nbd", "copy", dst.uri(), "-"],
                           stdout=f, stderr=subprocess.PIPE, timeout=120)
    assert r.returncode == 0, r.stderr
    assert piped.read_bytes() == (tmp_path / "back.img").read_bytes()


def test_copy_nbd_to_nbd(nbd_servers, psk_file, qcow2_with_holes, tmp_path) -> None:
    src = nbd_servers.qemu_nbd(qcow2_with_holes, fmt="qcow2", psk_file=psk_file)
    dst = nbd_servers.nbdkit("memory", f"size={SIZE}", psk_file=psk_file)
    r = appliance("nbd", "copy", "--progress", src.uri(), dst.uri())
    assert r.returncode == 0, r.stderr
    assert "100.0%" in r.stderr
    tool("nbdcopy", src.uri(), str(tmp_path / "a.img"))
    tool("nbdcopy", dst.uri(), str(tmp_path / "b.img"))
    assert (tmp_path / "a.img").read_bytes() == (tmp_path / "b.img").read_bytes()


def test_copy_without_multi_conn_falls_back_with_warning(nbd_servers, psk_file, tmp_path) -> None:
    srv = nbd_servers.nbdkit("pattern", "size=4M", "multi-conn-mode=disable",
                             filters=("multi-conn",), psk_file=psk_file)
    r = appliance("nbd", "copy", "--connections", "4", srv.uri(), str(tmp_path / "o.img"))
    assert r.returncode == 0, r.stderr
    assert "does not allow multiple connections" in r.stderr
    assert (tmp_path / "o.img").stat().st_size == 4 << 20


def test_copy_to_read_only_export_is_refused(nbd_servers, psk_file, tmp_path) -> None:
    dst = nbd_servers.nbdkit("memory", "size=1M", psk_file=psk_file, read_only=True)
    src = tmp_path / "s.img"
    src.write_bytes(b"x" * 4096)
    r = appliance("nbd", "copy", str(src), dst.uri())
    assert r.returncode != 0
    assert "read-only" in r.stderr and "Traceback" not in r.stderr
