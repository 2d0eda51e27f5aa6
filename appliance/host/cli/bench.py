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
    register_board(sub)


def register_board(sub: Any) -> None:
    """Add ``appliance bench board``."""
    from appliance.host.cli import absolute_path

    bd = sub.add_parser("board", help="our boot and root disk vs Debian's nbd-client, QEMU",
                        description="Boot the built image under qemu-system-arm -M sabrelite, "
                        "alternately ours (the agent, TLS-PSK) and the baseline (busybox "
                        "/init, Debian's nbd-client kernel-direct, plaintext), N times each "
                        "on the same kernel, modules and root; print boot stages (guest "
                        "clock), dd read/write figures on allocated data of the root disk "
                        "and the agent's RSS: medians, min-max and ratios ours/baseline.")
    bd.add_argument("-n", "--boots", type=int, default=3, choices=range(1, 21), metavar="N",
                    help="boots of each (default 3)")
    bd.add_argument("--out", type=absolute_path, default=Path("out").absolute(),
                    help="artefacts (default ./out; built if needed)")
    bd.add_argument("--path", help="the data path of ours (the board's nbd.path setting; "
                    "default: the agent's own default)")
    bd.add_argument("--plain", action="store_true", help="ours over plaintext nbd:// too "
                    "(separates TLS's cost from the data path's)")
    bd.add_argument("--read-mib", type=int, default=32, choices=range(1, 101), metavar="MIB",
                    help="MiB read with dd bs=1M (default 32)")
    bd.add_argument("--requests", type=int, default=256, choices=range(1, 4097), metavar="N",
                    help="4 KiB requests read and written with O_DIRECT (default 256)")
    bd.add_argument("--write-mib", type=int, default=8, choices=range(1, 65), metavar="MIB",
                    help="MiB written with dd bs=1M oflag=direct (default 8)")
    bd.add_argument("--cpus", type=int, default=1, choices=range(1, 5), metavar="N",
                    help="emulated CPU cores of both boards, qemu -smp (default 1, QEMU's "
                    "default for sabrelite; the real i.MX6Q has 4). Each core is a host "
                    "thread: give the host more free cores than this, or the guest stalls")
    bd.add_argument("--qemu-nbd", metavar="PATH", help="the qemu-nbd serving both roots "
                    "(default: the one on PATH)")
    bd.add_argument("--keep", type=absolute_path, metavar="DIR",
                    help="keep each boot's console log and root copy here")
    bd.set_defaults(func=cmd_board)


def register_storm(sub: Any) -> None:
    """Add ``appliance bench storm`` and ``appliance bench record-trace``."""
    from appliance.host.fleet.trace import DEBIAN_TRACE, DEFAULT_TRACE

    st = sub.add_parser("storm", help="N simulated boards boot at once from appliance serve",
                        description="Replay a recorded boot trace from N client processes "
                        "at once, each with its own TLS-PSK identity and its own qemu-nbd "
                        "(as appliance serve runs them); print the time for all boots, "
                        "p50/p99 latency, server RSS and CPU, errors.")
    st.add_argument("--boards", default="1,8,32,64", metavar="N,N,...",
                    help="board counts (default 1,8,32,64)")
    st.add_argument("--trace", type=Path, default=DEFAULT_TRACE,
                    help=f"trace file (default: {DEFAULT_TRACE.name}, a recorded sabrelite "
                    f"boot of the minimal root; {DEBIAN_TRACE} is the Debian root's)")
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
    rt.add_argument("output", type=Path, help="the trace file to write (gzipped text)")
    rt.add_argument("--out", type=Path, default=Path("out"), help="artefacts (default ./out)")
    rt.add_argument("--root", choices=("minimal", "debian"), default="minimal",
                    help="which NBD root boots: the busybox minimal root (default) or the "
                    "Debian systemd root (to its status line, after systemd's start-up)")
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


def cmd_board(args: argparse.Namespace) -> int:
    """Handler of ``appliance bench board``."""
    from appliance.host.bench_board import (
        BoardBenchOptions,
        bench,
        load_average,
        server_version,
    )
    from appliance.host.bench_figures import table
    from appliance.host.children import signals_raise

    opts = BoardBenchOptions(out=args.out, boots=args.boots, read_mib=args.read_mib,
                             requests=args.requests, write_mib=args.write_mib, path=args.path,
                             plain=args.plain, cpus=args.cpus,
                             qemu_nbd=args.qemu_nbd, keep=args.keep)
    before = load_average()
    with signals_raise():  # SIGTERM/SIGHUP unwind too: qemu-nbd and QEMU are ended by PID
        runs = bench(opts, report_line)
    label = f"ours ({args.path or 'default path'}, {'plaintext' if args.plain else 'TLS-PSK'})"
    for line in table(runs, label):
        print(line)
    print(f"server: {server_version(args.qemu_nbd)}; emulated cores: {args.cpus}; "
          f"host load average (1/5/15 min): {before} before, {load_average()} after")
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    """Handler of ``appliance bench record-trace``."""
    from appliance.host.children import signals_raise
    from appliance.host.fleet.trace import record

    with signals_raise():  # SIGTERM/SIGHUP unwind too: nbdkit and QEMU are ended by PID
        record(args.out, args.output, report_line,
               timeout=900.0 if args.root == "debian" else 300.0, root=args.root)
    return 0
