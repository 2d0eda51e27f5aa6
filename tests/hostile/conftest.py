"""The hostile-server suite's tally, a figure at the end of the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import figures


@pytest.fixture(scope="session", autouse=True)
def _hostile_figure() -> Iterator[None]:
    yield
    from tests.hostile import harness

    t = harness.TALLY
    if not t["cases"]:
        return
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(t.items()) if k not in ("cases", "ok"))
    figures.figure(f"hostile servers: {t['cases']} cases, ok {t['ok']}, {kinds}; "
                   f"hangs {t['HANG']}, max client allocation "
                   f"{harness.PEAK[0] / (1 << 20):.1f} MiB"
                   + (f", max CLI RSS {harness.CLI_RSS[0] >> 20} MiB" if harness.CLI_RSS[0]
                      else ""))
