"""The relay against a server whose maximum block size is 64 KiB (nbdkit's blocksize-policy
filter refusing anything larger with EINVAL), TLS-PSK: kernel requests of 1 MiB, 4 MiB and
40 MiB go through in pieces, with no I/O error, checked by SHA-256 against the server's
file.  Issue 12, defect 3."""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from appliance.nbd import (
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_TRIM,
    NBD_CMD_WRITE,
    NBD_CMD_WRITE_ZEROES,
    NEED_DATA,
    ClientTransmission,
    ReplyDone,
    Request,
)
from appliance.nbd.uri import parse_uri
from appliance.relay import uri_connector
from tests.relay.conftest import IMAGE_SIZE
from tests.relay.test_relay import pipelined_read, pipelined_write, restart_once

pytestmark = pytest.mark.interop

KiB, MiB = 1 << 10, 1 << 20
MAXIMUM = 64 * KiB
POLICY = (f"blocksize-maximum={MAXIMUM}", "blocksize-minimum=512", "blocksize-error-policy=error")


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def small_max_server(nbd_servers, image: Path, psk_file: Path):  # type: ignore[no-untyped-def]
    return nbd_servers.nbdkit("file", str(image), *POLICY, psk_file=psk_file,
                              filters=("blocksize-policy",))


def test_the_server_refuses_requests_over_its_maximum(nbd_servers, image: Path,
                                                      psk_file: Path) -> None:
    """The premise: a 1 MiB READ sent to this server as it is fails with EINVAL."""
    srv = small_max_server(nbd_servers, image, psk_file)
    up = uri_connector(parse_uri(srv.uri()))()
    try:
        assert up.info.max_block_size == MAXIMUM
        tx = ClientTransmission(replace(up.info, max_block_size=32 * MiB), assemble_reads=True)
        tx.send(Request(NBD_CMD_READ, 0, MiB))
        up.sock.sendall(tx.data_to_send())
        if up.trailing:
            tx.receive_data(up.trailing)
        while (ev := tx.next_event()) is NEED_DATA or not isinstance(ev, ReplyDone):
            if ev is NEED_DATA:
                tx.receive_data(up.sock.recv(1 << 20))
    finally:
        up.sock.close()
    assert ev.error == errno.EINVAL


def test_1mib_reads_and_writes_and_4mib_zeroes_go_through_in_pieces(
        nbd_servers, image: Path, psk_file: Path, relay_to) -> None:
    srv = small_max_server(nbd_servers, image, psk_file)
    expected = bytearray(image.read_bytes())
    writes = [(off, os.urandom(MiB)) for off in range(0, IMAGE_SIZE // 2, MiB)]
    for off, data in writes:
        expected[off:off + MiB] = data
    zero_at = 10 * MiB
    expected[zero_at:zero_at + 4 * MiB] = bytes(4 * MiB)
    with relay_to(srv.uri()) as run:
        assert run.relay.export.max_block_size == MAXIMUM
        data, errors = pipelined_read(run.kernel, IMAGE_SIZE, chunk=MiB, depth=8)
        assert errors == [] and sha(data) == sha(image.read_bytes())
        assert pipelined_write(run.kernel, writes, depth=8) == []
        assert run.kernel.call(NBD_CMD_WRITE_ZEROES, zero_at, 4 * MiB).error == 0
        assert run.kernel.call(NBD_CMD_FLUSH).error == 0
        data, errors = pipelined_read(run.kernel, IMAGE_SIZE, chunk=MiB, depth=8)
        stats = run.relay.stats
    assert errors == []
    assert sha(data) == sha(expected)
    assert sha(image.read_bytes()) == sha(expected)
    reads, zero_pieces = 2 * IMAGE_SIZE // MAXIMUM, 4 * MiB // MAXIMUM
    assert stats.pieces == reads + IMAGE_SIZE // 2 // MAXIMUM + zero_pieces
    assert stats.errors == 0


def test_oversize_trim_goes_through(nbd_servers, image: Path, psk_file: Path,
                                    relay_to) -> None:
    srv = small_max_server(nbd_servers, image, psk_file)
    before = image.read_bytes()
    with relay_to(srv.uri()) as run:
        assert run.kernel.call(NBD_CMD_TRIM, 2 * MiB, 4 * MiB).error == 0
        assert run.kernel.call(NBD_CMD_FLUSH).error == 0
        assert run.relay.stats.pieces == 4 * MiB // MAXIMUM
    after = image.read_bytes()  # trimmed bytes read as anything; the rest is untouched
    assert sha(after[:2 * MiB] + after[6 * MiB:]) == sha(before[:2 * MiB] + before[6 * MiB:])


def test_kernel_requests_over_32_mib_work(nbd_servers, tmp_path: Path, psk_file: Path,
                                          relay_to) -> None:
    big = tmp_path / "big.img"
    big.write_bytes(bytes(48 * MiB))
    srv = small_max_server(nbd_servers, big, psk_file)
    payload = os.urandom(40 * MiB)
    with relay_to(srv.uri()) as run:
        assert run.kernel.call(NBD_CMD_WRITE, 4 * MiB, data=payload).error == 0
        assert run.kernel.call(NBD_CMD_FLUSH).error == 0
        r = run.kernel.call(NBD_CMD_READ, 4 * MiB, 40 * MiB)
    assert r.error == 0 and sha(r.data) == sha(payload)
    assert sha(big.read_bytes()[4 * MiB:44 * MiB]) == sha(payload)


def test_server_restart_mid_split_reads_and_writes_is_invisible(
        nbd_servers, image: Path, psk_file: Path, relay_to) -> None:
    srv = small_max_server(nbd_servers, image, psk_file)
    writes = [(off, os.urandom(MiB)) for off in range(0, IMAGE_SIZE, MiB)]
    read_hook = restart_once(srv, IMAGE_SIZE // 3)
    write_hook = restart_once(srv, len(writes) // 2)
    with relay_to(srv.uri()) as run:
        data, errors = pipelined_read(run.kernel, IMAGE_SIZE, chunk=MiB, depth=8,
                                      after=read_hook)
        assert errors == [] and sha(data) == sha(image.read_bytes())
        assert pipelined_write(run.kernel, writes, depth=8, after=write_hook) == []
        assert run.kernel.call(NBD_CMD_FLUSH).error == 0
        stats = run.relay.stats
    assert read_hook.fired.is_set() and write_hook.fired.is_set()  # type: ignore[attr-defined]
    assert stats.outages >= 2
    assert sha(image.read_bytes()) == sha(b"".join(d for _, d in writes))
