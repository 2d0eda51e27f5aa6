"""Relay throughput next to the direct client, same server, same request pattern.

    .venv/bin/python -m tests.bench.relay_bench [--size 1G] [--random 20000] [--depth 16]

Serves SIZE bytes with nbdkit's pattern plugin over TLS-PSK on 127.0.0.1 and reads them
(1) straight from appliance.client (one connection, DEPTH requests in flight), and
(2) through the relay running in its own process (``python -m appliance.relay --fd``),
driven by tests.relay.kernelside.KernelSide playing the kernel on the socketpair.
Both: sequential reads of 128 KiB (the kernel's usual readahead request), then 4 KiB
reads at random aligned offsets.  Prints MB/s, IOPS and the ratio relay / direct.

The kernel's side is played by :class:`LeanKernel`: requests packed with struct, replies
read straight into one buffer, as drivers/block/nbd.c does (a memcpy per reply).  Playing
it with the Python protocol core (tests/relay/kernelside.py, which the correctness tests
use) would bill a second Python parser to the relay that the board does not have.
``RELAY_PROFILE=FILE`` runs the relay under cProfile.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from appliance.client import connect
from appliance.nbd import NBD_CMD_DISC, NBD_CMD_READ, ReadData, Request, proto
from tests import servers

SEQ_CHUNK = 128 << 10
RAND_CHUNK = 4096


def offsets_seq(size: int) -> list[tuple[int, int]]:
    return [(o, min(SEQ_CHUNK, size - o)) for o in range(0, size, SEQ_CHUNK)]


def offsets_rand(size: int, count: int, seed: int = 1) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randrange(size // RAND_CHUNK) * RAND_CHUNK, RAND_CHUNK) for _ in range(count)]


def direct(uri: str, work: Iterable[tuple[int, int]], depth: int) -> tuple[float, int]:
    got = 0

    def on_data(ev: object) -> None:
        nonlocal got
        if isinstance(ev, ReadData):
            got += len(ev.data)

    with connect(uri) as c:
        it = iter(work)
        start = time.perf_counter()
        while True:
            while c.in_flight < depth:
                item = next(it, None)
                if item is None:
                    break
                c.submit(Request(NBD_CMD_READ, offset=item[0], length=item[1]), on_data)
            if not c.in_flight:
                break
            for comp in c.wait():
                assert comp.done.ok, comp.done
        return time.perf_counter() - start, got


class LeanKernel:
    """Simple requests out, simple replies in; READ payloads land in one reused buffer."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inflight: dict[int, int] = {}  # handle -> read length
        self._handle = 0
        self._buf = bytearray(1 << 21)
        self._view = memoryview(self._buf)
        self._have = 0

    def read(self, offset: int, length: int) -> None:
        self._handle += 1
        handle = (self._handle << 32) | (self._handle & 0x7F)
        self.inflight[handle] = length
        self.sock.sendall(proto.REQUEST.pack(proto.NBD_REQUEST_MAGIC, 0, NBD_CMD_READ,
                                             handle, offset, length))

    def disconnect(self) -> None:
        self.sock.sendall(proto.REQUEST.pack(proto.NBD_REQUEST_MAGIC, 0, NBD_CMD_DISC,
                                             0, 0, 0))

    def wait(self) -> int:
        """Read until at least one reply is complete; return the payload bytes received."""
        got = 0
        done = False
        while not done:
            n = self.sock.recv_into(self._view[self._have:])
            if not n:
                raise ConnectionError("relay closed the socket")
            self._have += n
            pos = 0
            while self._have - pos >= 16:
                magic, error, handle = proto.SIMPLE_REPLY.unpack_from(self._buf, pos)
                assert magic == proto.NBD_SIMPLE_REPLY_MAGIC and error == 0, (magic, error)
                length = self.inflight[handle]
                if self._have - pos < 16 + length:
                    break
                del self.inflight[handle]
                pos += 16 + length
                got += length
                done = True
            self._buf[:self._have - pos] = self._buf[pos:self._have]
            self._have -= pos
        return got


def through_relay(uri: str, work: Iterable[tuple[int, int]], depth: int) -> tuple[float, int]:
    relay_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    prof = ["-m", "cProfile", "-o", os.environ["RELAY_PROFILE"]] \
        if os.environ.get("RELAY_PROFILE") else []
    proc = subprocess.Popen([sys.executable, *prof, "-m", "appliance.relay", "--fd",
                             str(relay_end.fileno()), uri], pass_fds=(relay_end.fileno(),),
                            env=env, stdin=subprocess.DEVNULL)
    relay_end.close()
    try:
        ks = LeanKernel(kernel_end)
        ks.read(0, 512)  # the clock starts once the relay is up and connected
        ks.wait()
        it = iter(work)
        got = 0
        start = time.perf_counter()
        while True:
            while len(ks.inflight) < depth:
                item = next(it, None)
                if item is None:
                    break
                ks.read(*item)
            if not ks.inflight:
                break
            got += ks.wait()
        elapsed = time.perf_counter() - start
        ks.disconnect()
        return elapsed, got
    finally:
        kernel_end.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def best(fn, repeats: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    runs = [fn() for _ in range(repeats)]
    return min(runs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="1G", help="export size (K/M/G suffix; default 1G)")
    ap.add_argument("--random", type=int, default=20000, help="4 KiB random reads (20000)")
    ap.add_argument("--depth", type=int, default=16, help="requests in flight (16)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per case, best counts (2)")
    args = ap.parse_args(argv)
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    size = int(args.size[:-1]) * mult[args.size[-1].upper()] if args.size[-1].isalpha() \
        else int(args.size)
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        psk = servers.make_psk(Path(tmp) / "psk")
        srv = servers.start_nbdkit("pattern", f"size={size}", tmp=Path(tmp) / "nbdkit",
                                   psk_file=psk)
        try:
            uri = srv.uri()
            print(f"nbdkit pattern {size >> 20} MiB, TLS-PSK, 127.0.0.1, depth {args.depth}")
            cases = [("sequential 128K", offsets_seq(size))]
            if args.random:
                cases.append(("random 4K", offsets_rand(size, args.random)))
            for name, work in cases:
                d_t, d_n = best(lambda w=work: direct(uri, w, args.depth), args.repeats)
                r_t, r_n = best(lambda w=work: through_relay(uri, w, args.depth),
                                args.repeats)
                assert d_n == r_n == sum(n for _, n in work)
                ops = len(work)
                print(f"{name:16} direct {d_n / d_t / 1e6:8.1f} MB/s {ops / d_t:9.0f} IOPS | "
                      f"relay {r_n / r_t / 1e6:8.1f} MB/s {ops / r_t:9.0f} IOPS | "
                      f"ratio {d_t / r_t:.2f}x")
        finally:
            srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
