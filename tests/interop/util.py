"""Helpers for interop tests: run the CLI and the libnbd tools as subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

TIMEOUT = 120


def appliance(*argv: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run ``appliance ARGV`` in a fresh interpreter (the way a user does)."""
    return subprocess.run([sys.executable, "-m", "appliance", *argv], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def tool(*argv: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run a reference tool (nbdinfo, nbdcopy...) and insist it works."""
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{argv[0]} failed: {r.stderr}"
    return r


def merged_map(rows: list[dict[str, Any]]) -> list[tuple[int, int, int]]:
    """(offset, length, type) with adjacent same-type extents merged."""
    out: list[list[int]] = []
    for r in rows:
        if out and out[-1][2] == r["type"] and out[-1][0] + out[-1][1] == r["offset"]:
            out[-1][1] += r["length"]
        else:
            out.append([r["offset"], r["length"], r["type"]])
    return [(a, b, c) for a, b, c in out]


def nbdinfo_map(uri: str, context: str = "base:allocation") -> list[tuple[int, int, int]]:
    return merged_map(json.loads(tool("nbdinfo", "--json", f"--map={context}", uri).stdout))


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    """The CLI failed with exactly one ``appliance: error:`` line and no traceback."""
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("appliance: error: "), r.stderr
    return lines[0]
