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
    mp = sub.add_parser("map", help="appliance nbd info --map vs nbdinfo --map",
                        description="Serve SIZE bytes with nbdkit's sparse-random plugin (one "
                        "extent per 4 KiB, so SIZE/4096 extents) on 127.0.0.1 and time "
                        "'appliance nbd info --map' and 'nbdinfo --map'; print seconds and "
                        "the ratio.")
    mp.add_argument("--size", type=parse_size, default=5 << 30,
                    help="bytes (default 5G: 1.3 M extents)")
    mp.add_argument("--repeats", type=int, default=2, choices=range(1, 11), metavar="N",
                    help="runs per tool; the best counts (default 2)")
    mp.set_defaults(func=cmd_map)


def cmd_copy(args: argparse.Namespace) -> int:
    """Handler of ``appliance bench copy``."""
    from appliance.host import children
    from appliance.host.bench import copy_benchmark, report

    with children.signals_raise():
        lines = report(copy_benchmark(args.size, args.repeats))
    for line in lines:
        print(line)
    return 0


def cmd_map(args: argparse.Namespace) -> int:
    """Handler of ``appliance bench map``."""
    from appliance.host.bench import map_benchmark, map_report

    results, _ = map_benchmark(args.size, args.repeats)
    for line in map_report(results):
        print(line)
    return 0
