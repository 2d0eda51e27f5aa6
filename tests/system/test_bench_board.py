"""A smoke run of ``appliance bench board``: one boot of ours, one of the baseline.

The benchmark itself is not timed here; this checks that it boots both on the built
image (the baseline initramfs included), reads every figure off the guests and prints
the table with sane numbers: stages in order, positive dd figures, an agent that is
alive with a plausible RSS.  Small dd sizes keep it to two boots' worth of CI time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.figures import figure

pytestmark = [pytest.mark.slow, pytest.mark.system]

TIMEOUT = 1200.0  # two TCG boots on 2 loaded cores
ROW = re.compile(r"^\| (?P<label>[^|]+?) \| (?P<ours>[^|]+?) \| (?P<base>[^|]+?) \| "
                 r"(?P<ratio>[^|]+?) \|$", re.M)
NUMBER = re.compile(r"^([\d.]+) (s|MB/s|MB)\b")


def value(cell: str) -> float:
    m = NUMBER.match(cell)
    assert m, cell
    return float(m.group(1))


def test_bench_board_prints_the_table(image_dir: Path, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "appliance", "bench", "board", "-n", "1", "--out",
            str(image_dir), "--read-mib", "4", "--requests", "32", "--write-mib", "1",
            "--keep", str(tmp_path)]
    run = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    rows = {m["label"]: m for m in ROW.finditer(run.stdout)}
    for line in run.stdout.splitlines():
        figure(f"bench board smoke: {line}")
    stages = [rows[k] for k in ("`Run /init` -> root mounted (guest clock)",
                                "kernel -> root mounted (guest clock)",
                                "QEMU start -> root's `root filesystem up`")]
    for side in ("ours", "base"):
        times = [value(r[side]) for r in stages]
        assert 0 < times[0] < times[1] < times[2] < TIMEOUT, times
    for label in ("dd bs=1M read, allocated data, cold cache",
                  "dd bs=4k iflag=direct read (one at a time)",
                  "dd bs=1M oflag=direct write, scratch file",
                  "dd bs=4k oflag=direct write (one at a time)"):
        assert 0.001 < value(rows[label]["ours"]) < 10_000, rows[label]
        assert 0.001 < value(rows[label]["base"]) < 10_000, rows[label]
        assert re.match(r"[\d.]+x", rows[label]["ratio"]), rows[label]
    rss = rows["data path RSS after boot (relay or kTLS supervisor / nbd-client)"]
    assert 5 < value(rss["ours"]) < 128, rss
    keeper = rows["DHCP lease keeper RSS after boot"]
    assert 5 < value(keeper["ours"]) < 128, keeper
    # the default path (ktls) serves the root: the supervisor, no relay
    assert re.search(r"^ours agent: \d+ nbdroot-ktls @", run.stdout, re.M), run.stdout
    assert "nbdroot-relay" not in run.stdout
    assert re.search(r"^ours agent: \d+ nbdroot-lease @", run.stdout, re.M), run.stdout
    assert "host load average" in run.stdout
