"""The table of ``appliance bench board``: medians, min-max and ratios ours/baseline.

One row per metric, the layout of issue 14's table: boot stages (seconds, lower is
better), dd figures (MB/s, higher is better) and the agent's RSS after boot (MB).
The ratio is always ours / baseline; a time ratio above 1 is slower, a throughput
ratio below 1 is slower, and the row says which.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from appliance.host.bench_board import BASELINE, OURS, BootRun


@dataclass(frozen=True)
class Metric:
    """One row: its label, unit, how to read it off a run, and which way is better."""

    label: str
    unit: str
    value: Callable[[BootRun], float]
    lower_is_better: bool
    digits: int = 2
    none: str = "none"  # a memory cell where no such process runs


METRICS = (
    Metric("kernel -> root mounted (guest clock)", "s", lambda r: r.kernel_to_root, True),
    Metric("`Run /init` -> root mounted (guest clock)", "s", lambda r: r.init_to_root, True),
    Metric("QEMU start -> root's `root filesystem up`", "s", lambda r: r.qemu_to_root_up,
           True, 1),
    Metric("dd bs=1M read, allocated data, cold cache", "MB/s", lambda r: r.dd["read-1M"],
           False),
    Metric("dd bs=4k iflag=direct read (one at a time)", "MB/s", lambda r: r.dd["read-4k"],
           False, 3),
    Metric("dd bs=1M oflag=direct write, scratch file", "MB/s", lambda r: r.dd["write-1M"],
           False),
    Metric("dd bs=4k oflag=direct write (one at a time)", "MB/s", lambda r: r.dd["write-4k"],
           False, 3),
    Metric("data path RSS after boot (relay or kTLS supervisor / nbd-client)", "MB",
           lambda r: r.rss_kb / 1024, True, 1,
           "none (no process: the kernel holds the socket)"),
    Metric("DHCP lease keeper RSS after boot", "MB", lambda r: r.keeper_kb / 1024, True, 1,
           "none (udhcpc exits: nothing renews the lease)"),
)


def cell(values: list[float], digits: int, unit: str, none: str = "none") -> str:
    """``median unit (min-max)``, or just the value for one run (``none`` for memory of
    a process that does not run)."""
    if unit == "MB" and not any(values):
        return none
    med = statistics.median(values)
    text = f"{med:.{digits}f} {unit}"
    if len(values) > 1:
        text += f" ({min(values):.{digits}f}-{max(values):.{digits}f})"
    return text


def ratio(metric: Metric, ours: float, baseline: float) -> str:
    """``ours/baseline`` with which way it goes."""
    if baseline <= 0:
        return "n/a"
    r = ours / baseline
    worse = r > 1 if metric.lower_is_better else r < 1
    if abs(r - 1) < 0.005:
        return f"{r:.2f}x"
    if metric.unit == "MB":
        return f"{r:.2f}x {'more' if r > 1 else 'less'}"
    return f"{r:.2f}x {'slower' if worse else 'faster'}"


def table(runs: list[BootRun], ours_label: str = "ours (TLS-PSK, relay)") -> list[str]:
    """The markdown table: median (min-max) per variant and the ratio of the medians."""
    by = {v: [r for r in runs if r.variant == v] for v in (OURS, BASELINE)}
    n = min(len(by[OURS]), len(by[BASELINE]))
    lines = [f"| metric (median of {n}, min-max) | {ours_label} | "
             "baseline (plain, kernel-direct) | ours/baseline |",
             "|---|---|---|---|"]
    for m in METRICS:
        ours = [m.value(r) for r in by[OURS]]
        base = [m.value(r) for r in by[BASELINE]]
        if not ours or not base:
            continue
        lines.append(f"| {m.label} | {cell(ours, m.digits, m.unit, m.none)} | "
                     f"{cell(base, m.digits, m.unit, m.none)} | "
                     f"{ratio(m, statistics.median(ours), statistics.median(base))} |")
    for r in by[OURS][:1] + by[BASELINE][:1]:
        for agent in r.agents:
            lines.append(f"{r.variant} agent: {agent}")
    return lines
