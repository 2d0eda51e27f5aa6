"""Benchmarks that print figures: ``appliance bench copy`` (our copy against nbdcopy) and
``appliance bench map`` (``nbd info --map`` against ``nbdinfo --map`` on a long extent list).

Owns timing, on a throw-away nbdkit (pattern plugin, TLS-PSK, loopback, a free port),
``appliance nbd copy`` and ``nbdcopy`` on the same URI to /dev/null, and the report.
Both tools run as subprocesses so that each pays its own start-up and neither shares a
process with the other.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ApplianceError

RUN_TIMEOUT = 600.0


@dataclass(frozen=True)
class Result:
    """One timed copy."""

    tool: str
    mode: str
    seconds: float
    size: int

    @property
    def mb_per_s(self) -> float:
        return self.size / self.seconds / 1e6


def _need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise ApplianceError(f"{binary} not found (install nbdkit and libnbd-bin)")
    return path


@contextlib.contextmanager
def nbdkit_pattern(size: int) -> Iterator[str]:
    """Serve ``nbdkit pattern size=SIZE`` over TLS-PSK on 127.0.0.1; yield its nbds:// URI."""
    from appliance.host.servers import ServerError, make_psk, start_nbdkit

    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        psk = make_psk(Path(tmp) / "tls", identity="bench")
        try:
            server = start_nbdkit("pattern", f"size={size}", tmp=Path(tmp) / "nbdkit",
                                  psk_file=psk)
        except ServerError as exc:
            raise ApplianceError(str(exc)) from None
        try:
            yield server.uri()
        finally:
            server.stop()


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise ApplianceError(f"{' '.join(argv[:4])}... failed: "
                             f"{r.stderr.decode(errors='replace').strip()[-300:]}")
    return elapsed


def copy_benchmark(size: int, repeats: int = 2) -> list[Result]:
    """Time both tools, one connection and defaults, best of ``repeats`` each."""
    nbdcopy = _need("nbdcopy")
    ours = [sys.executable, "-m", "appliance", "nbd", "copy", "--no-progress"]
    results: list[Result] = []
    with nbdkit_pattern(size) as uri:
        runs = [
            ("appliance", "1 connection", [*ours, "--connections", "1", uri, "/dev/null"]),
            ("nbdcopy", "1 connection", [nbdcopy, "--connections=1", uri, "/dev/null"]),
            ("appliance", "defaults", [*ours, uri, "/dev/null"]),
            ("nbdcopy", "defaults", [nbdcopy, uri, "/dev/null"]),
        ]
        for tool, mode, argv in runs:
            best = min(_time(argv) for _ in range(repeats))
            results.append(Result(tool, mode, best, size))
    return results


def report(results: list[Result]) -> list[str]:
    """Lines with MB/s per run and our/nbdcopy ratio per mode."""
    lines = [f"{r.tool:<10} {r.mode:<13} {r.seconds:7.2f} s  {r.mb_per_s:8.1f} MB/s"
             for r in results]
    for mode in dict.fromkeys(r.mode for r in results):
        ours = next(r for r in results if r.mode == mode and r.tool == "appliance")
        theirs = next(r for r in results if r.mode == mode and r.tool == "nbdcopy")
        lines.append(f"ratio appliance/nbdcopy, {mode}: {ours.mb_per_s / theirs.mb_per_s:.2f}x")
    return lines


MAP_EXTENT = 4096  # sparse-random run length: one extent per 4 KiB, alternating data/hole


def map_benchmark(size: int, repeats: int = 2) -> tuple[list[Result], int]:
    """Time ``--map`` of both tools on ``nbdkit sparse-random`` (``size / 4096`` extents);
    best of ``repeats``.  Also returns the number of rows; both print the same bytes."""
    from appliance.host.servers import ServerError, start_nbdkit

    nbdinfo = _need("nbdinfo")
    ours = [sys.executable, "-m", "appliance", "nbd", "info", "--map"]
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        try:
            server = start_nbdkit("sparse-random", f"size={size}", "percent=50",
                                  f"runlength={MAP_EXTENT}", "seed=1", tmp=Path(tmp))
        except ServerError as exc:
            raise ApplianceError(str(exc)) from None
        try:
            uri = server.uri()
            rows = [_rows([*ours, uri]), _rows([nbdinfo, "--map", uri])]
            if rows[0] != rows[1]:
                raise ApplianceError(f"the maps differ: {rows[0][0]} rows against nbdinfo's "
                                     f"{rows[1][0]}, or other bytes")
            results = [Result(tool, f"{rows[0][0]} extents",
                              min(_time(argv) for _ in range(repeats)), size)
                       for tool, argv in (("appliance", [*ours, uri]),
                                          ("nbdinfo", [nbdinfo, "--map", uri]))]
        finally:
            server.stop()
    return results, rows[0][0]


def _rows(argv: list[str]) -> tuple[int, str]:
    """The rows ``argv`` prints, and the SHA-256 of its output."""
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=RUN_TIMEOUT)
    if r.returncode != 0:
        raise ApplianceError(f"{argv[0]} failed: {r.stderr.decode(errors='replace')[-300:]}")
    return r.stdout.count(b"\n"), hashlib.sha256(r.stdout).hexdigest()


def map_report(results: list[Result]) -> list[str]:
    """Seconds per tool and our/nbdinfo time ratio (lower is better; target <= 2)."""
    lines = [f"{r.tool:<10} --map {r.mode:<18} {r.seconds:7.2f} s" for r in results]
    ours, theirs = results
    lines.append(f"ratio appliance/nbdinfo time, --map: {ours.seconds / theirs.seconds:.2f}x")
    return lines
