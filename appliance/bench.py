"""Benchmarks that print figures: ``appliance bench copy`` (our copy against nbdcopy).

Owns starting a throw-away nbdkit (pattern plugin, TLS-PSK, loopback, a free port), timing
``appliance nbd copy`` and ``nbdcopy`` on the same URI to /dev/null, and the report.
Both tools run as subprocesses so that each pays its own start-up and neither shares a
process with the other.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.errors import ApplianceError

READY_TIMEOUT = 15.0
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def nbdkit_pattern(size: int) -> Iterator[str]:
    """Serve ``nbdkit pattern size=SIZE`` over TLS-PSK; yield its nbds:// URI."""
    nbdkit = _need("nbdkit")
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        psk = os.path.join(tmp, "keys.psk")
        fd = os.open(psk, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"bench:{secrets.token_hex(32)}\n")
        port, pid_file = _free_port(), os.path.join(tmp, "nbdkit.pid")
        argv = [nbdkit, "-f", "-P", pid_file, "-i", "127.0.0.1", "-p", str(port),
                "--tls=require", f"--tls-psk={psk}", "pattern", f"size={size}"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, start_new_session=True)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not os.path.exists(pid_file):
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise ApplianceError(f"nbdkit did not start: {err.strip()[-300:]}")
                time.sleep(0.02)
            yield f"nbds://bench@127.0.0.1:{port}/?tls-psk-file={psk}"
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(5)


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
