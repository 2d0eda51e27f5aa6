"""``appliance bench storm``: N simulated boards boot at once from one ``appliance serve``.

Each board of a throw-away fleet (its own identity, key and server, as ``appliance
serve`` runs them) is a separate client process replaying a recorded boot trace
(:mod:`.replay`).  All processes start, import and load the trace first; then all are
told "go" at once and each connects (TLS-PSK) and replays.  Printed per N: the time until
the last board finished, the median board, p50/p99 request latency over every request,
the servers' peak RSS (sum of VmHWM) and CPU time (utime + stime) during the storm, and
errors.  N=1 in the same run is the reference for the ratio.

The golden image is the trace's extent with every range the trace touches filled with
random bytes (so reads hit real data, not holes), or ``--image``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from appliance.deadline import Deadline
from appliance.errors import ConfigError
from appliance.host import children

from . import boards, golden
from .serve import FleetServer
from .state import Fleet, Listen
from .trace import Op, extent, load

READY_TIMEOUT = 120.0
STORM_TIMEOUT = 900.0
MiB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")

Reporter = Callable[[str], None]


@dataclass(frozen=True)
class StormResult:
    """The figures of one storm of ``boards`` boards."""

    boards: int
    requests: int
    all_boots_s: float
    median_boot_s: float
    p50_ms: float
    p99_ms: float
    server_rss_mib: float
    server_cpu_s: float
    errors: int
    error: str


def golden_for(ops: list[Op], path: Path) -> Path:
    """A sparse raw image covering ``ops`` with random data where they read."""
    rng = random.Random(1)  # noqa: S311 - test data, not a secret
    size = -(-extent(ops) // MiB) * MiB
    with path.open("wb") as f:
        f.truncate(size)
        for start, end in merged((op.offset, op.offset + op.length) for op in ops
                                 if op.command == "R"):
            f.seek(start)
            f.write(rng.randbytes(end - start))
    return path


def merged(ranges: Iterator[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def free_ports(count: int, tries: int = 50) -> int:
    """A first port P such that P..P+count-1 are free on 127.0.0.1 right now."""
    rng = random.Random()  # noqa: S311 - port choice
    for _ in range(tries):
        base = rng.randrange(20000, 60000 - count)
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise ConfigError(f"no {count} consecutive free ports on 127.0.0.1")


def proc_figures(pids: list[int]) -> tuple[float, float]:
    """(sum of peak RSS in MiB, sum of CPU seconds) of ``pids``."""
    rss_kib, ticks = 0, 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    rss_kib += int(line.split()[1])
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
    return rss_kib / 1024, ticks / CLK_TCK


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Storm:
    """A fleet of simulated boards on one golden image, grown to each N in turn."""

    def __init__(self, work: Path, trace: Path, image: Path | None, mode: str, depth: int,
                 paced: bool = False) -> None:
        self.work, self.trace, self.mode, self.depth, self.paced = (
            work, trace, mode, depth, paced)
        self.ops = load(trace)
        self.fleet = Fleet(work / "fleet").ensure()
        source = image or golden_for(self.ops, work / "golden-source.raw")
        if source.stat().st_size < extent(self.ops):
            raise ConfigError(f"{source} is smaller than the trace's extent "
                              f"({extent(self.ops)} bytes)")
        self.golden = golden.import_image(self.fleet, source)

    def run(self, n: int) -> StormResult:
        """Boot ``n`` boards at once; the figures."""
        for i in range(len(self.fleet.boards()), n):
            boards.add(self.fleet, f"board-{i:03d}", golden_version=self.golden.number,
                       mode=self.mode)
        server = FleetServer(self.fleet, lambda line: None)
        clients: list[subprocess.Popen[bytes]] = []
        try:
            server.start(Listen("127.0.0.1", free_ports(n)))
            results = self._storm(server, clients, n)
        finally:
            for proc in clients:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            server.stop()
        return results

    def _storm(self, server: FleetServer, clients: list[subprocess.Popen[bytes]],
               n: int) -> StormResult:
        out = self.work / f"results-{n}"
        out.mkdir(exist_ok=True)
        for b in self.fleet.boards()[:n]:
            argv = [sys.executable, "-m", "appliance.host.fleet.replay",
                    boards.uri(self.fleet, b), str(self.trace), str(out / f"{b.name}.json"),
                    str(self.depth), "1" if self.mode == "cow" else "0",
                    "1" if self.paced else "0"]
            clients.append(children.popen(argv, stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE))
        deadline = Deadline(READY_TIMEOUT)
        for proc in clients:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != b"ready" or deadline.expired:
                raise ConfigError("a simulated board did not start (see its stderr above)")
        _, cpu0 = proc_figures(server.pids)
        started = time.monotonic()
        for proc in clients:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            proc.stdin.flush()
        for proc in clients:
            proc.wait(max(1.0, started + STORM_TIMEOUT - time.monotonic()))
        took = time.monotonic() - started
        rss, cpu1 = proc_figures(server.pids)
        return self._figures(out, n, took, rss, cpu1 - cpu0)

    def _figures(self, out: Path, n: int, took: float, rss: float, cpu: float) -> StormResult:
        latencies: list[float] = []
        boots: list[float] = []
        requests, errors, error = 0, 0, ""
        for b in self.fleet.boards()[:n]:
            path = out / f"{b.name}.json"
            if not path.exists():
                errors, error = errors + 1, error or f"{b.name}: no result"
                continue
            r = json.loads(path.read_text())
            latencies += r["latencies"]
            boots.append(r["boot_s"])
            requests += r["requests"]
            errors += r["errors"]
            error = error or r["error"]
        return StormResult(n, requests, took, statistics.median(boots) if boots else 0.0,
                           percentile(latencies, 0.5) * 1e3, percentile(latencies, 0.99) * 1e3,
                           rss, cpu, errors, error)


def storm(trace: Path, counts: list[int], work: Path, report: Reporter, emit: Reporter, *,
          image: Path | None = None, mode: str = "overlay", depth: int = 8,
          paced: bool = False) -> list[StormResult]:
    """A storm for each N in ``counts``; each table row goes to ``emit`` as it is known."""
    results = []
    with children.signals_raise():
        s = Storm(work, trace, image, mode, depth, paced)
        report(f"trace {trace.name}: {len(s.ops)} requests; golden {s.golden.size // MiB} MiB; "
               f"mode {mode}, depth {depth}{', paced as recorded' if paced else ''}; "
               "one qemu-nbd and one client process per board")
        emit(HEADER)
        for n in counts:
            results.append(s.run(n))
            emit(row(results[-1], results[0]))
    return results


HEADER = (f"{'boards':>6} {'requests':>9} {'all boots':>10} {'vs N=1':>7} {'median':>8} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'srv RSS':>9} {'srv CPU':>8} {'errors':>6}")


def row(r: StormResult, ref: StormResult) -> str:
    ratio = r.all_boots_s / ref.all_boots_s if ref.all_boots_s else 0.0
    line = (f"{r.boards:>6} {r.requests:>9} {r.all_boots_s:>9.2f}s {ratio:>6.1f}x "
            f"{r.median_boot_s:>7.2f}s {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
            f"{r.server_rss_mib:>6.0f}MiB {r.server_cpu_s:>7.2f}s {r.errors:>6}")
    return line + (f"  first error: {r.error}" if r.error else "")
