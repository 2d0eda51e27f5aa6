"""``appliance bench storm`` at small N: the recorded boot trace, replayed for real.

Two simulated boards (own identities, own qemu-nbd, TLS-PSK on 127.0.0.1) replay the
committed trace of a sabrelite boot (the minimal root; the Debian root's trace is
checked to be a real boot too); every read is answered and the table has a row
per N with no errors.  Figures are printed, not asserted against times.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.host.fleet.trace import DEBIAN_TRACE, DEFAULT_TRACE, load

from .conftest import pid_alive

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("trace", [DEFAULT_TRACE, DEBIAN_TRACE], ids=["minimal", "debian"])
def test_the_committed_traces_are_real_boots(trace: Path) -> None:
    ops = load(trace)
    reads = [op for op in ops if op.command == "R"]
    assert len(reads) > 100 and ops[-1].t > 1.0
    assert reads[0].offset == 0  # the server check / partition probe reads block 0 first


def test_storm_smoke(tmp_path: Path) -> None:
    reads = sum(op.command in ("R", "F") for op in load(DEFAULT_TRACE))
    r = subprocess.run([sys.executable, "-m", "appliance", "bench", "storm", "--boards", "1,2",
                        "--work", str(tmp_path)], capture_output=True, text=True, timeout=300,
                       check=False)
    print(r.stdout)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["1", "2"]
    for row in rows:
        assert int(row[1]) == int(row[0]) * reads  # every request answered
        assert row[-1] == "0"  # errors
    pids = [int(f.read_text()) for f in tmp_path.glob("fleet/run/board-*.pid")]
    assert len(pids) == 2 and not any(pid_alive(pid) for pid in pids)  # servers gone
