"""``nbd copy`` where it disagreed with nbdcopy (issue 12): limits, zeroes, clean
disconnects, local errors.  Against real nbdkit 1.32 and qemu-nbd 7.2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import servers
from tests.interop.util import appliance, one_line_error, tool

pytestmark = pytest.mark.interop

MiB = 1 << 20


def test_hole_larger_than_max_block_zeroes_a_dirty_export(nbd_servers, tmp_path: Path) -> None:
    """Defect 1: a 64 MiB hole becomes WRITE_ZEROES no larger than the server's maximum."""
    disk = tmp_path / "disk.raw"
    disk.write_bytes(os.urandom(64 * MiB))  # the destination holds data to be zeroed
    srv = nbd_servers.qemu_nbd(disk)
    empty = tmp_path / "empty.img"
    with open(empty, "wb") as f:
        f.truncate(64 * MiB)
    r = appliance("nbd", "copy", str(empty), srv.uri())
    assert r.returncode == 0, r.stderr
    srv.stop()
    assert disk.read_bytes() == bytes(64 * MiB)


def test_request_size_is_checked_up_front() -> None:
    """Defect 2: nbdcopy's rule, a power of two from 4096 to 32 MiB."""
    for bad in ("64M", "3000", "12K"):
        r = appliance("nbd", "copy", "--request-size", bad, "a", "b")
        assert r.returncode == 2 and "power of two" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_writes_split_to_the_maximum(nbd_servers, tmp_path: Path) -> None:
    """Defect 2: 1 MiB requests into a 64 KiB-maximum export (the filter refuses more)."""
    data = os.urandom(3 * MiB)
    src = tmp_path / "src.img"
    src.write_bytes(data)
    srv = nbd_servers.nbdkit("memory", str(3 * MiB), "blocksize-minimum=4096",
                             "blocksize-maximum=65536", "blocksize-error-policy=error",
                             filters=("blocksize-policy",))
    r = appliance("nbd", "copy", "--request-size", "1M", str(src), srv.uri())
    assert r.returncode == 0, r.stderr
    out = tmp_path / "back.img"
    tool("nbdcopy", "--request-size=65536", srv.uri(), str(out))
    assert out.read_bytes() == data


def test_zero_file_into_qcow2_allocates_like_nbdcopy(nbd_servers, tmp_path: Path) -> None:
    """Defect 4: written zeroes are detected; qcow2 stays as small as nbdcopy leaves it."""
    zeroes = tmp_path / "zero.img"
    zeroes.write_bytes(bytes(16 * MiB))
    sizes = []
    for name, cmd in (("ours", ("appliance",)), ("theirs", ("nbdcopy",))):
        image = servers.make_image(tmp_path / f"{name}.qcow2", 16 * MiB, fmt="qcow2")
        srv = nbd_servers.qemu_nbd(image, fmt="qcow2")
        if cmd == ("appliance",):
            r = appliance("nbd", "copy", str(zeroes), srv.uri())
            assert r.returncode == 0, r.stderr
        else:
            tool("nbdcopy", str(zeroes), srv.uri())
        srv.stop()
        sizes.append(os.stat(image).st_blocks * 512)
    assert sizes[0] <= sizes[1] + 64 * 1024, sizes


def test_zero_export_without_extents_makes_a_sparse_file(nbd_servers, tmp_path: Path) -> None:
    """Defect 4: nbdkit --no-sr reports no holes; the zeroes still become holes."""
    srv = nbd_servers.nbdkit("memory", str(64 * MiB), extra=("--no-sr",))
    out = tmp_path / "out.img"
    r = appliance("nbd", "copy", srv.uri(), str(out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size == 64 * MiB
    assert out.stat().st_blocks == 0


def test_closed_pipe_does_not_crash_nbdkit(nbd_servers) -> None:
    """Defect 5: no NBD_CMD_DISC while requests are in flight (nbdkit 1.32 aborts on it)."""
    srv = nbd_servers.nbdkit("pattern", str(1 << 30))
    for _ in range(3):
        copy = subprocess.Popen([sys.executable, "-m", "appliance", "nbd", "copy", srv.uri(),
                                 "-"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL)
        assert copy.stdout is not None and copy.stderr is not None
        assert len(copy.stdout.read(10)) == 10
        copy.stdout.close()  # like `| head -c10`
        err = copy.stderr.read()
        assert copy.wait(60) == 1
        assert b"Traceback" not in err
    assert srv.proc is not None and srv.proc.poll() is None, srv.log_text()
    assert "Assertion" not in srv.log_text()
    assert len(tool("nbdcopy", srv.uri(), "/dev/null").stderr) == 0


def test_full_stdout_is_an_ordinary_error(tmp_path: Path) -> None:
    """Defect 6: ENOSPC on stdout is one line and exit 1, not an internal error."""
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(MiB))
    with open("/dev/full", "wb") as full:
        r = subprocess.run([sys.executable, "-m", "appliance", "nbd", "copy", str(src), "-"],
                           stdout=full, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == ("appliance: error: cannot write to standard output: "
                                "No space left on device")


def test_closed_stdout_is_an_ordinary_error(tmp_path: Path) -> None:
    src = tmp_path / "src.img"
    src.write_bytes(os.urandom(4096))
    r = subprocess.run(f'"{sys.executable}" -m appliance nbd copy "{src}" - >&-', shell=True,
                       stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 1
    assert r.stderr.strip() == "appliance: error: cannot write to standard output: it is closed"


@pytest.mark.parametrize("dst", ["out.bin", "-", "/dev/null"])
def test_directory_source_is_refused_at_once(tmp_path: Path, dst: str) -> None:
    """Defect 7: "Is a directory", no destination file left behind, no hang."""
    (tmp_path / "dir").mkdir()
    target = str(tmp_path / dst) if dst == "out.bin" else dst
    r = appliance("nbd", "copy", str(tmp_path / "dir"), target, timeout=30)
    assert one_line_error(r).endswith("Is a directory")
    assert not (tmp_path / "out.bin").exists()


def test_character_device_source_is_refused() -> None:
    """Defect 7: /dev/zero has no size; copying "0 bytes" and exiting 0 was wrong."""
    r = appliance("nbd", "copy", "/dev/zero", "/dev/null", timeout=30)
    assert "not a regular file or block device" in one_line_error(r)
