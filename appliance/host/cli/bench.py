"""``appliance bench copy``: print copy throughput next to nbdcopy's on the same server."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from appliance.errors import UsageError


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
    register_storm(sub)


def register_storm(sub: Any) -> None:
    """Add ``appliance bench storm`` and ``appliance bench record-trace``."""
    from appliance.host.fleet.trace import DEFAULT_TRACE

    st = sub.add_parser("storm", help="N simulated boards boot at once from appliance serve",
                        description="Replay a recorded boot trace from N client processes "
                        "at once, each with its own TLS-PSK identity and its own qemu-nbd "
                        "(as appliance serve runs them); print the time for all boots, "
                        "p50/p99 latency, server RSS and CPU, errors.")
    st.add_argument("--boards", default="1,8,32,64", metavar="N,N,...",
                    help="board counts (default 1,8,32,64)")
    st.add_argument("--trace", type=Path, default=DEFAULT_TRACE,
                    help=f"trace file (default: {DEFAULT_TRACE.name}, a recorded sabrelite boot)")
    st.add_argument("--image", type=Path, help="golden image (default: synthesised to fit "
                    "the trace, random data where it reads)")
    st.add_argument("--root-mode", choices=("overlay", "cow"), default="overlay",
                    help="overlay: shared read-only golden, reads only (default); cow: a "
                    "qcow2 overlay per board, writes replayed too")
    st.add_argument("--depth", type=int, default=8, choices=range(1, 129), metavar="N",
                    help="requests in flight per board (default 8)")
    st.add_argument("--paced", action="store_true",
                    help="keep the trace's timing (its gaps are the board computing)")
    st.add_argument("--work", type=Path, help="keep the fleet here (default: a temporary "
                    "directory, removed)")
    st.set_defaults(func=cmd_storm)
    rt = sub.add_parser("record-trace", help="record a real guest boot's block requests",
                        description="Boot the built image under qemu-system-arm -M sabrelite "
                        "with its root served by nbdkit's log filter over TLS-PSK, and write "
                        "the requests the server received as a trace.")
    rt.add_argument("output", type=Path)
    rt.add_argument("--out", type=Path, default=Path("out"), help="artefacts (default ./out)")
    rt.set_defaults(func=cmd_record)


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


def report_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_storm(args: argparse.Namespace) -> int:
    """Handler of ``appliance bench storm``."""
    from appliance.host.fleet.storm import storm

    try:
        counts = [int(n) for n in args.boards.split(",")]
    except ValueError:
        raise UsageError(f"--boards: expected N,N,..., got '{args.boards}'") from None
    if not counts or min(counts) < 1 or max(counts) > 256:
        raise UsageError("--boards: each N must be 1-256")
    with tempfile.TemporaryDirectory(prefix="storm-") as tmp:
        work = args.work or Path(tmp)
        results = storm(args.trace, counts, work, report_line,
                        lambda line: print(line, flush=True), image=args.image,
                        mode=args.root_mode, depth=args.depth, paced=args.paced)
    return 1 if any(r.errors for r in results) else 0


def cmd_record(args: argparse.Namespace) -> int:
    """Handler of ``appliance bench record-trace``."""
    from appliance.host.children import signals_raise
    from appliance.host.fleet.trace import record

    with signals_raise():  # SIGTERM/SIGHUP unwind too: nbdkit and QEMU are ended by PID
        record(args.out, args.output, report_line)
    return 0
