"""The blocking client against real nbdkit plugins and filters (TLS-PSK mostly)."""

from __future__ import annotations

import errno
import struct
import time
from pathlib import Path

import pytest

from appliance.client import connect
from appliance.errors import RequestError
from appliance.nbd import NBD_CMD_READ, Request
from tests.interop.util import nbdinfo_map

pytestmark = pytest.mark.interop


def pattern(offset: int, length: int) -> bytes:
    """nbdkit-pattern-plugin: each 8-byte word holds its own offset, big-endian."""
    start = offset - offset % 8
    words = b"".join(struct.pack(">Q", o) for o in range(start, offset + length + 8, 8))
    return words[offset - start:offset - start + length]


def test_pattern_over_tls(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("pattern", "size=16M", psk_file=psk_file)
    with connect(srv.uri()) as c:
        assert c.info.size == 16 << 20
        for off, n in ((0, 4096), (12345, 777), ((16 << 20) - 100, 100)):
            assert c.pread(off, n) == pattern(off, n)


def test_data_plugin(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("data", "data=1 2 3 @0x1000 0x41 0x42", "size=8192",
                             psk_file=psk_file)
    with connect(srv.uri()) as c:
        assert c.pread(0, 4) == b"\x01\x02\x03\x00"
        assert c.pread(0x1000, 2) == b"AB"


def test_memory_write_read_and_multi_conn(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("memory", "size=4M", psk_file=psk_file)
    with connect(srv.uri()) as a, connect(srv.uri()) as b:
        assert a.info.can_multi_conn
        a.pwrite(b"hello", 1000)
        a.flush()
        assert b.pread(1000, 5) == b"hello"  # CAN_MULTI_CONN: visible on the other connection
        b.zero(1000, 5)
        b.flush()
        assert a.pread(1000, 5) == bytes(5)


def test_sparse_random_block_status_matches_nbdinfo(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("sparse-random", "size=64M", "seed=42", "percent=30",
                             "runlength=1048576", psk_file=psk_file)
    rows: list[tuple[int, int, int]] = []
    with connect(srv.uri(), meta_contexts=("base:allocation",)) as c:
        off = 0
        while off < c.info.size:
            for e in c.block_status(off, c.info.size - off)["base:allocation"]:
                if rows and rows[-1][2] == e.flags:
                    rows[-1] = (rows[-1][0], rows[-1][1] + e.length, e.flags)
                else:
                    rows.append((off, e.length, e.flags))
                off += e.length
    assert rows == nbdinfo_map(srv.uri())
    assert {t for _, _, t in rows} == {0, 3}  # both data and holes


def test_error_filter_fails_one_request_then_recovers(nbd_servers, psk_file, tmp_path) -> None:
    trigger = tmp_path / "fail-now"
    srv = nbd_servers.nbdkit("memory", "size=1M", "error=EIO", "error-pread-rate=100%",
                             f"error-pread-file={trigger}", filters=("error",),
                             psk_file=psk_file)
    with connect(srv.uri()) as c:
        assert c.pread(0, 512) == bytes(512)
        trigger.touch()
        with pytest.raises(RequestError) as info:
            c.pread(0, 512)
        assert info.value.errno == errno.EIO
        assert "NBD_CMD_READ at offset 0 length 512" in str(info.value)
        assert srv.uri() in str(info.value)
        trigger.unlink()
        assert c.pread(0, 512) == bytes(512)  # the connection survived


def test_delay_filter_requests_are_pipelined(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("pattern", "size=1M", "delay-read=200ms", filters=("delay",),
                             psk_file=psk_file, threads=16)
    with connect(srv.uri()) as c:
        start = time.monotonic()
        cookies = {c.submit(Request(NBD_CMD_READ, i * 4096, 4096)) for i in range(8)}
        done = set()
        for _ in range(100):
            done |= {x.done.cookie for x in c.wait() if x.done.ok}
            if done == cookies:
                break
        elapsed = time.monotonic() - start
    assert done == cookies
    assert 0.2 <= elapsed < 8 * 0.2  # in flight together, not one after another


def test_read_only_nbdkit(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("memory", "size=1M", psk_file=psk_file, read_only=True)
    with connect(srv.uri()) as c:
        assert c.info.read_only
        with pytest.raises(Exception, match="read-only"):
            c.pwrite(b"x", 0)
        assert c.pread(0, 1) == b"\x00"


def test_unix_socket_tls(nbd_servers, psk_file, tmp_path: Path) -> None:
    srv = nbd_servers.nbdkit("pattern", "size=1M", psk_file=psk_file, unix=True)
    assert srv.uri().startswith("nbds+unix://")
    with connect(srv.uri()) as c:
        assert c.pread(8, 8) == struct.pack(">Q", 8)


def test_ipv6_loopback_tls(nbd_servers, psk_file) -> None:
    srv = nbd_servers.nbdkit("pattern", "size=1M", psk_file=psk_file, host="::1")
    assert srv.uri().startswith("nbds://alice@[::1]:")
    with connect(srv.uri()) as c:
        assert c.pread(16, 8) == struct.pack(">Q", 16)
