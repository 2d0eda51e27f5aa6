"""Attach through the real kernel nbd driver: /dev/nbdN served by the relay from qemu-nbd.

Runs where the kernel has the nbd driver (the QEMU sabrelite guest, a developer machine
with nbd.ko) and we are root; everywhere else it is SKIPPED with the reason -- the kernel
is never faked.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from pathlib import Path

import pytest

from appliance.errors import KernelError
from appliance.kernel import detach, devices
from appliance.relay import ReconnectPolicy
from appliance.relay.serve import AttachOptions, attach_and_serve

pytestmark = pytest.mark.interop


def _nbd_available() -> str | None:
    """None if the nbd driver can be used here, else why not."""
    if os.geteuid() != 0:
        return "attaching /dev/nbdN needs root"
    try:
        devices.ensure_driver()
    except KernelError as exc:
        return f"no nbd driver on this kernel ({os.uname().release}): {exc}"
    if not list(Path("/dev").glob("nbd*")):
        return "the nbd driver is loaded but there is no /dev/nbd* node"
    return None


REASON = _nbd_available()
needs_nbd = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@needs_nbd
@pytest.mark.parametrize("method", ["auto", "ioctl"])
def test_attach_read_write_restart_detach(nbd_servers, tmp_path: Path, psk_file: Path,
                                          method: str) -> None:
    size = 32 << 20
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(size))
    server = nbd_servers.qemu_nbd(image, psk_file=psk_file)
    from appliance.nbd.uri import parse_uri

    policy = ReconnectPolicy(initial=0.05, maximum=0.5)
    att, relay = attach_and_serve(parse_uri(server.uri()), policy, AttachOptions(method=method))
    assert method == "auto" or att.method == method
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        st = devices.read_state(att.index)
        assert st is not None and st.size_bytes == size
        fd = os.open(att.path, os.O_RDWR)
        try:
            expected = image.read_bytes()
            got = bytearray()
            restarted = False
            for off in range(0, size, 1 << 20):
                got += os.pread(fd, 1 << 20, off)
                if off >= size // 2 and not restarted:
                    server.restart(down_for=0.5)
                    restarted = True
            assert got == expected
            block = os.urandom(1 << 20)
            assert os.pwrite(fd, block, 4 << 20) == len(block)
            os.fsync(fd)  # writeback, then NBD_CMD_FLUSH, through the relay
        finally:
            os.close(fd)
        assert image.read_bytes()[4 << 20:5 << 20] == block
        assert relay.stats.outages >= 1
    finally:
        detach(att.path)
        thread.join(30.0)
    assert not thread.is_alive()
    if att.ioctl is not None:
        assert att.ioctl.wait(30.0), "NBD_DO_IT did not return after the disconnect"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        st = devices.read_state(att.index)
        if st is None or not st.in_use:
            break
        time.sleep(0.1)
    assert st is None or not st.in_use


@needs_nbd
def test_small_maximum_block_size_no_io_error(nbd_servers, tmp_path: Path) -> None:
    """Issue 12 defect 3: an export with a 64 KiB maximum (nbdkit blocksize-policy, which
    fails anything larger): 1 MiB direct writes and reads through /dev/nbdN still work,
    because the kernel is told the limit at attach time."""
    size = 8 << 20
    server = nbd_servers.nbdkit("memory", str(size), "blocksize-minimum=512",
                                "blocksize-maximum=65536", "blocksize-error-policy=error",
                                filters=("blocksize-policy",))
    from appliance.nbd.uri import parse_uri

    policy = ReconnectPolicy(initial=0.05, maximum=0.5)
    att, relay = attach_and_serve(parse_uri(server.uri()), policy, AttachOptions())
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        queue = Path(f"/sys/block/nbd{att.index}/queue")
        assert int((queue / "max_sectors_kb").read_text()) <= 64
        data = os.urandom(1 << 20)
        fd = os.open(att.path, os.O_RDWR | os.O_DIRECT)
        try:
            buf = mmap.mmap(-1, len(data))  # page-aligned, as O_DIRECT needs
            buf.write(data)
            assert os.pwritev(fd, [buf], 1 << 20) == len(data)
            os.fsync(fd)
            back = mmap.mmap(-1, len(data))
            assert os.preadv(fd, [back], 1 << 20) == len(data)
            assert bytes(back) == data
        finally:
            os.close(fd)
        assert relay.stats.errors == 0
    finally:
        detach(att.path)
        thread.join(30.0)
    assert "rejected" not in server.log_text()


def test_skip_reason_is_stated() -> None:
    """On a host without nbd the reason above is specific (this test always runs)."""
    if REASON is not None:
        assert "nbd" in REASON or "root" in REASON
    else:
        assert list(Path("/dev").glob("nbd*"))
