"""4 KiB reads one at a time, per server: where a small request's time goes, on the host.

    .venv/bin/python -m tests.bench.latency_bench [--requests 200] [--qemu-nbd-10 PATH]

Serves 64 MiB of random data (allocated: no read is answered as a hole) with qemu-nbd 7.2,
qemu-nbd 10 (bookworm-backports, as the extended-headers tests fetch it) and nbdkit 1.32,
each plaintext and TLS-PSK on 127.0.0.1, and reads REQUESTS random 4 KiB blocks one at a
time (1) with appliance.client directly and (2) through the relay
(:func:`tests.bench.relay_bench.through_relay`, the kernel played by LeanKernel).  Prints
the median time per request.

What it showed (2026-12-01): qemu-nbd 7.2 with TLS takes 44 ms per request from any
client that does not ACK at once, 0.2 ms in plaintext.  Its TLS path writes a structured
reply's chunk header and payload as two records without TCP_NODELAY, so Nagle holds the
payload until the header's ACK, which the client delays (40 ms).  qemu-nbd 10 sets
TCP_NODELAY and corks each reply; nbdkit sends each reply whole.  The relay sets
TCP_QUICKACK after each read of the server, which makes qemu-nbd 7.2 as fast as the others.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from appliance.client import connect
from appliance.host.servers import NBDServer, make_psk, start_nbdkit, start_qemu_nbd
from tests.bench.relay_bench import through_relay

SIZE = 64 << 20
BLOCK = 4096


def offsets(count: int, seed: int = 1) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(SIZE // BLOCK) * BLOCK for _ in range(count)]


def direct_ms(uri: str, offs: list[int]) -> float:
    """Median milliseconds per pread with our client."""
    times = []
    with connect(uri) as c:
        for off in offs:
            start = time.perf_counter()
            c.pread(off, BLOCK)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def relay_ms(uri: str, offs: list[int]) -> float:
    """Mean milliseconds per request through the relay, depth 1."""
    elapsed, _ = through_relay(uri, [(o, BLOCK) for o in offs], 1)
    return elapsed / len(offs) * 1e3


def servers(tmp: Path, image: Path, psk: Path, qemu_nbd_10: str | None,
            ) -> list[tuple[str, Callable[[], NBDServer]]]:
    """(name, start) per case: each qemu-nbd and nbdkit, plaintext then TLS-PSK."""
    cases: list[tuple[str, Callable[[], NBDServer]]] = []
    binaries = [("qemu-nbd 7.2", None)] + ([("qemu-nbd 10", qemu_nbd_10)] if qemu_nbd_10 else [])
    for name, binary in binaries:
        for key in (None, psk):
            cases.append((f"{name} {'TLS-PSK' if key else 'plain'}",
                          partial(start_qemu_nbd, image, tmp / f"s{len(cases)}", export="d",
                                  psk_file=key, binary=binary)))
    for key in (None, psk):
        cases.append((f"nbdkit 1.32 {'TLS-PSK' if key else 'plain'}",
                      partial(start_nbdkit, "file", str(image), tmp=tmp / f"s{len(cases)}",
                              psk_file=key)))
    return cases


def find_qemu_nbd_10() -> str | None:
    found = sorted(Path.home().glob(".cache/nbdroot-imx6/debs/unpacked-qemu-utils_*/usr/bin/"
                                    "qemu-nbd"))
    return str(found[-1]) if found else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=200, help="4 KiB reads per case (200)")
    ap.add_argument("--qemu-nbd-10", default=find_qemu_nbd_10(),
                    help="a newer qemu-nbd (default: the one the interop tests unpacked)")
    args = ap.parse_args(argv)
    offs = offsets(args.requests)
    with tempfile.TemporaryDirectory(prefix="latency-bench-") as tmp_name:
        tmp = Path(tmp_name)
        image = tmp / "disk.raw"
        image.write_bytes(os.urandom(SIZE))
        psk = make_psk(tmp / "tls", "alice")
        print(f"4 KiB reads one at a time, {args.requests} per case, 127.0.0.1")
        for name, start in servers(tmp, image, psk, args.qemu_nbd_10):
            server = start()
            try:
                uri = server.uri()
                print(f"{name:22} direct {direct_ms(uri, offs):7.2f} ms   "
                      f"relay {relay_ms(uri, offs):7.2f} ms", flush=True)
            finally:
                server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
