"""``appliance bench copy``: print copy throughput next to nbdcopy's on the same server."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add ``appliance bench``."""
    from appliance.cli.nbd import parse_size

    p = subparsers.add_parser("bench", help="benchmarks that print figures",
                              description="Measure performance against reference tools.")
    sub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    cp = sub.add_parser("copy", help="appliance nbd copy vs nbdcopy, TLS-PSK, loopback",
                        description="Serve SIZE bytes with nbdkit's pattern plugin over TLS-PSK "
                        "on 127.0.0.1 and copy them to /dev/null with 'appliance nbd copy' and "
                        "'nbdcopy' (one connection, then each tool's defaults); print MB/s and "
                        "the ratio.")
    cp.add_argument("--size", type=parse_size, default=1 << 30, help="bytes (default 1G)")
    cp.add_argument("--repeats", type=int, default=2, choices=range(1, 11), metavar="N",
                    help="runs per case; the best counts (default 2)")
    cp.set_defaults(func=cmd_copy)


def cmd_copy(args: argparse.Namespace) -> int:
    """Handler of ``appliance bench copy``."""
    from appliance.host import children
    from appliance.host.bench import copy_benchmark, report

    with children.signals_raise():
        lines = report(copy_benchmark(args.size, args.repeats))
    for line in lines:
        print(line)
    return 0
