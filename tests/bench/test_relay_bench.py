"""Keeps the relay benchmark runnable: a small run that prints its figures (no timing
assertion -- targets are read from the printed figures, see relay_bench.py)."""

from __future__ import annotations

import pytest

from tests.bench import relay_bench

pytestmark = [pytest.mark.slow, pytest.mark.interop]


def test_relay_bench_small(capsys: pytest.CaptureFixture[str]) -> None:
    assert relay_bench.main(["--size", "32M", "--random", "1000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "ratio" in line]
    assert len(lines) == 2, out
    with capsys.disabled():
        print("\nFIGURE: relay bench (32 MiB smoke run):\n" + "\n".join(lines))
