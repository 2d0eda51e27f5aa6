"""Benchmark and robustness figures printed by the reliability suites (hostile, faults, load).

``figure("name: value, ...")`` prints ``FIGURE: name: ...`` at once (visible with
``pytest -s``) and keeps it; the suites' conftest files repeat every figure in pytest's
terminal summary, so a plain ``pytest tests/hostile tests/faults tests/load`` shows them.
If ``APPLIANCE_FIGURES`` names a file, each line is appended to it too.
"""

from __future__ import annotations

import os
from typing import Any

FIGURES: list[str] = []
_shown = [False]


def figure(text: str) -> str:
    line = f"FIGURE: {text}"
    FIGURES.append(line)
    print(line, flush=True)
    path = os.environ.get("APPLIANCE_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    return line


def terminal_summary(terminalreporter: Any) -> None:
    """Print every figure once in the terminal summary (several conftests call this)."""
    if _shown[0] or not FIGURES:
        return
    _shown[0] = True
    terminalreporter.write_sep("-", "figures")
    for line in FIGURES:
        terminalreporter.write_line(line)
