"""The relay against real servers (qemu-nbd, nbdkit) over TLS-PSK, the kernel played by
KernelSide on the other end of the socketpair: bytes compared, servers killed and restarted
mid-transfer, nbdkit's error filter, a server that never comes back."""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.nbd import (
    NBD_CMD_FLAG_FUA,
    NBD_CMD_READ,
    NBD_CMD_WRITE,
    NBD_CMD_WRITE_ZEROES,
)
from appliance.relay import ReconnectPolicy
from tests.relay.conftest import IMAGE_SIZE
from tests.relay.kernelside import KernelSide

pytestmark = pytest.mark.interop

CHUNK = 128 << 10


def pipelined_read(ks: KernelSide, size: int, *, chunk: int = CHUNK, depth: int = 16,
                   after: Callable[[int], None] | None = None) -> tuple[bytearray, list[int]]:
    """Read [0, size) with ``depth`` requests in flight, like the kernel's readahead."""
    out = bytearray(size)
    errors: list[int] = []
    offsets = {}
    next_off, done = 0, 0
    while done < size:
        while next_off < size and len(ks.requests) < depth:
            n = min(chunk, size - next_off)
            offsets[ks.read(next_off, n)] = (next_off, n)
            next_off += n
        for r in ks.wait():
            off, n = offsets.pop(r.cookie)
            if r.error:
                errors.append(r.error)
            else:
                out[off:off + n] = r.data
            done += n
            if after is not None:
                after(done)
    return out, errors


def pipelined_write(ks: KernelSide, writes: list[tuple[int, bytes]], *, depth: int = 16,
                    after: Callable[[int], None] | None = None) -> list[int]:
    errors: list[int] = []
    it = iter(writes)
    left = len(writes)
    count = 0
    while left:
        while len(ks.requests) < depth:
            item = next(it, None)
            if item is None:
                break
            ks.write(*item)
        for r in ks.wait():
            left -= 1
            count += 1
            if r.error:
                errors.append(r.error)
            if after is not None:
                after(count)
    return errors


def restart_once(server, at: int, down_for: float = 0.3) -> Callable[[int], None]:
    """An ``after`` hook that kills and restarts ``server`` once progress passes ``at``, with
    the requests then in flight waiting at the relay.  (In the calling thread: nbdkit started
    from a short-lived thread exits at once -- it follows its parent *thread*.)"""
    fired = threading.Event()

    def hook(progress: int) -> None:
        if progress >= at and not fired.is_set():
            fired.set()
            server.restart(down_for=down_for)

    hook.fired = fired  # type: ignore[attr-defined]
    return hook


@pytest.fixture(params=["qemu-nbd", "nbdkit", "nbdkit-simple"])
def server(request, nbd_servers, image: Path, psk_file: Path):
    """qemu-nbd and nbdkit (structured replies), and nbdkit --no-sr (simple replies only)."""
    if request.param == "qemu-nbd":
        return nbd_servers.qemu_nbd(image, psk_file=psk_file)
    extra = ("--no-sr",) if request.param == "nbdkit-simple" else ()
    return nbd_servers.nbdkit("file", str(image), psk_file=psk_file, extra=extra)


def test_read_whole_export_matches_file(server, image: Path, relay_to) -> None:
    with relay_to(server.uri()) as run:
        data, errors = pipelined_read(run.kernel, IMAGE_SIZE)
        structured = run.relay.export.structured_replies
    assert structured == ("--no-sr" not in server.argv)
    assert errors == []
    assert data == image.read_bytes()


def test_writes_reach_the_file_and_read_back(server, image: Path, relay_to) -> None:
    rng = random.Random(7)
    writes = [(rng.randrange(0, IMAGE_SIZE // 4096) * 4096, os.urandom(rng.choice(
        [512, 4096, 65536]))) for _ in range(200)]
    writes = [(o, d) for o, d in writes if o + len(d) <= IMAGE_SIZE]
    # The kernel never has overlapping writes in flight: keep one write per 64 KiB region.
    seen: set[int] = set()
    unique = []
    for o, d in writes:
        if o // 65536 not in seen and (o + len(d) - 1) // 65536 not in seen:
            seen.update({o // 65536, (o + len(d) - 1) // 65536})
            unique.append((o, d))
    expected = bytearray(image.read_bytes())
    for o, d in unique:
        expected[o:o + len(d)] = d
    fua = unique[::5]  # some with FUA, as the kernel sends REQ_FUA writes
    with relay_to(server.uri()) as run:
        assert pipelined_write(run.kernel, [w for w in unique if w not in fua]) == []
        for off, data in fua:
            run.kernel.write(off, data, flags=NBD_CMD_FLAG_FUA)
        fua_errors = []
        while run.kernel.requests:
            fua_errors += [r.error for r in run.kernel.wait()]
        assert fua_errors == [0] * len(fua)
        assert run.kernel.call(3).error == 0  # NBD_CMD_FLUSH
        data, errors = pipelined_read(run.kernel, IMAGE_SIZE)
    assert errors == []
    assert data == expected
    assert image.read_bytes() == expected


def test_server_restart_mid_read_is_invisible(server, image: Path, relay_to) -> None:
    hook = restart_once(server, IMAGE_SIZE // 3)
    with relay_to(server.uri()) as run:
        data, errors = pipelined_read(run.kernel, IMAGE_SIZE, chunk=64 << 10, after=hook)
        stats = run.relay.stats
    assert hook.fired.is_set()  # type: ignore[attr-defined]
    assert errors == []
    assert data == image.read_bytes()
    assert stats.outages >= 1
    assert stats.outage_log, "the outage was logged with its length"


def test_server_restart_mid_write_keeps_every_write(server, image: Path, relay_to) -> None:
    block = 32 << 10
    writes = [(off, os.urandom(block)) for off in range(0, IMAGE_SIZE, block)]
    hook = restart_once(server, len(writes) // 3)
    with relay_to(server.uri()) as run:
        errors = pipelined_write(run.kernel, writes, after=hook)
        assert run.kernel.call(3).error == 0  # FLUSH after the outage
        stats = run.relay.stats
    assert hook.fired.is_set()  # type: ignore[attr-defined]
    assert errors == []
    assert stats.outages >= 1
    assert image.read_bytes() == b"".join(d for _, d in writes)


def test_write_zeroes_passes_through(server, image: Path, relay_to) -> None:
    with relay_to(server.uri()) as run:
        assert run.kernel.call(NBD_CMD_WRITE_ZEROES, 1 << 20, 1 << 20).error == 0
        r = run.kernel.call(NBD_CMD_READ, 1 << 20, 1 << 20)
    assert r.error == 0 and r.data == bytes(1 << 20)
    assert image.read_bytes()[1 << 20:2 << 20] == bytes(1 << 20)


def test_server_errno_reaches_the_kernel_side(nbd_servers, psk_file: Path, relay_to) -> None:
    srv = nbd_servers.nbdkit("memory", "8M", "error-pwrite=ENOSPC", "error-pwrite-rate=1",
                             psk_file=psk_file, filters=("error",))
    with relay_to(srv.uri()) as run:
        assert run.kernel.call(NBD_CMD_WRITE, 0, data=b"y" * 4096).error == errno.ENOSPC
        assert run.kernel.call(NBD_CMD_READ, 0, 4096).error == 0


def test_error_filter_gives_eio_not_a_hang(nbd_servers, psk_file: Path, relay_to) -> None:
    srv = nbd_servers.nbdkit("memory", "8M", "error-pread=EIO", "error-pread-rate=1",
                             psk_file=psk_file, filters=("error",))
    with relay_to(srv.uri()) as run:
        r = run.kernel.call(NBD_CMD_READ, 0, 4096)
        assert r.error == errno.EIO
        assert r.data == b""
        w = run.kernel.call(NBD_CMD_WRITE, 0, data=b"x" * 4096)  # writes still work
        assert w.error == 0
        assert run.relay.connected  # an error reply is not an outage
        assert run.relay.stats.outages == 0


def test_server_gone_for_good_fails_after_deadline(server, relay_to) -> None:
    deadline = 1.0
    policy = ReconnectPolicy(initial=0.05, maximum=0.2, deadline=deadline, connect_timeout=2.0)
    with relay_to(server.uri(), policy) as run:
        assert run.kernel.call(NBD_CMD_READ, 0, 4096).error == 0
        server.kill()
        started = time.monotonic()
        r = run.kernel.call(NBD_CMD_READ, 4096, 4096)
        waited = time.monotonic() - started
        assert r.error == errno.EIO
        assert deadline * 0.8 <= waited < deadline + 5.0
        started = time.monotonic()  # once past the deadline, new requests fail at once
        assert run.kernel.call(NBD_CMD_READ, 0, 4096).error == errno.EIO
        assert time.monotonic() - started < 1.0
        # ... and the relay recovers when the server comes back.
        server.start()
        t_end = time.monotonic() + 10.0
        while not run.relay.connected and time.monotonic() < t_end:
            time.sleep(0.05)
        assert run.kernel.call(NBD_CMD_READ, 0, 4096).error == 0


def test_export_size_change_fails_pending_with_eio(nbd_servers, image: Path, psk_file: Path,
                                                   relay_to) -> None:
    srv = nbd_servers.qemu_nbd(image, psk_file=psk_file)
    policy = ReconnectPolicy(initial=0.05, maximum=0.2, connect_timeout=2.0)
    with relay_to(srv.uri(), policy) as run:
        srv.kill()
        os.truncate(image, IMAGE_SIZE * 2)
        cookie = run.kernel.read(0, 4096)
        srv.start()
        replies = run.kernel.wait()
        assert [(r.cookie, r.error) for r in replies] == [(cookie, errno.EIO)]
        assert not run.relay.connected


def test_kernel_disconnect_ends_the_relay(server, relay_to) -> None:
    with relay_to(server.uri()) as run:
        assert run.kernel.call(NBD_CMD_READ, 0, 512).error == 0
        run.kernel.disconnect()
        run.thread.join(10.0)
        assert not run.thread.is_alive()
        assert run.kernel.sock.recv(1) == b""  # the relay closed its end


def test_requests_in_flight_at_the_crash_are_replayed(nbd_servers, image: Path, psk_file: Path,
                                                      relay_to) -> None:
    """nbdkit's delay filter holds every request 0.3 s, so all of them are unanswered when the
    server is killed: each must be replayed (same cookie) and succeed."""
    srv = nbd_servers.nbdkit("file", str(image), "rdelay=300ms", "wdelay=300ms",
                             psk_file=psk_file, filters=("delay",))
    payloads = {off: os.urandom(4096) for off in range(1 << 20, 2 << 20, 128 << 10)}
    with relay_to(srv.uri()) as run:
        ks = run.kernel
        reads = {ks.read(off, 65536): off for off in range(0, 1 << 20, 128 << 10)}
        writes = {ks.write(off, data): off for off, data in payloads.items()}
        time.sleep(0.1)  # all forwarded, none answered
        srv.restart(down_for=0.2)
        replies = {}
        while len(replies) < len(reads) + len(writes):
            for r in ks.wait():
                replies[r.cookie] = r
        stats = run.relay.stats
    assert {c: r.error for c, r in replies.items()} == dict.fromkeys(replies, 0)
    disk = image.read_bytes()
    for cookie, off in reads.items():
        assert replies[cookie].data == disk[off:off + 65536]
    for off, data in payloads.items():
        assert disk[off:off + 4096] == data
    assert stats.outages == 1
    assert stats.replayed == len(reads) + len(writes)


def test_network_cut_is_detected_and_survived(nbd_servers, image: Path, psk_file: Path,
                                              relay_to) -> None:
    """A silent cut (no FIN/RST): the relay notices the silence after io_timeout, reconnects
    on a new connection and replays; the kernel side sees only a delay."""
    from tests.relay.proxy import CuttableProxy

    srv = nbd_servers.qemu_nbd(image, psk_file=psk_file)
    proxy = CuttableProxy(("127.0.0.1", srv.port))
    uri = srv.uri().replace(f":{srv.port}/", f":{proxy.port}/")
    policy = ReconnectPolicy(initial=0.05, maximum=0.2, connect_timeout=2.0, io_timeout=1.0)
    try:
        with relay_to(uri, policy) as run:
            assert run.kernel.call(NBD_CMD_READ, 0, 4096).error == 0
            proxy.cut()
            started = time.monotonic()
            r = run.kernel.call(NBD_CMD_READ, 65536, 65536)
            waited = time.monotonic() - started
            stats = run.relay.stats
    finally:
        proxy.close()
    assert r.error == 0
    assert r.data == image.read_bytes()[65536:131072]
    assert 0.8 < waited < 10
    assert stats.outages == 1 and stats.replayed == 1


def test_reconnect_needs_no_key_file(nbd_servers, image: Path, psk_file: Path, tmp_path: Path,
                                     relay_to) -> None:
    """After switch_root the initramfs holding the PSK file is gone: reconnects must work
    from the key read at start.  (The server keeps its own copy: GnuTLS reads it at every
    handshake.)"""
    srv = nbd_servers.qemu_nbd(image, psk_file=psk_file)
    ours = tmp_path / "initramfs" / "keys.psk"
    ours.parent.mkdir()
    ours.write_bytes(psk_file.read_bytes())
    ours.chmod(0o600)
    with relay_to(srv.uri(psk_file=ours)) as run:
        assert run.kernel.call(NBD_CMD_READ, 0, 4096).error == 0
        ours.unlink()
        srv.kill()
        cookie = run.kernel.read(8192, 4096)
        srv.start()
        replies = run.kernel.wait()
        stats = run.relay.stats
    assert [(r.cookie, r.error) for r in replies] == [(cookie, 0)]
    assert replies[0].data == image.read_bytes()[8192:12288]
    assert stats.outages == 1
