"""Benchmark and robustness figures printed by the suites (hostile, faults, load, bench,
system, ...).

``figure("name: value, ...")`` prints ``FIGURE: name: ...`` at once (visible with
``pytest -s``) and keeps it for the run: the root conftest repeats every figure of the run
in pytest's terminal summary, whichever test worker (pytest-xdist) measured it.  The run
keeps them in a file named by ``APPLIANCE_FIGURES_RUN`` (made by the root conftest, which
the workers inherit); without one, in this process's memory.  If ``APPLIANCE_FIGURES``
names a file, each line is appended to it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

RUN_ENV = "APPLIANCE_FIGURES_RUN"
FIGURES: list[str] = []


def figure(text: str) -> str:
    line = f"FIGURE: {text}"
    FIGURES.append(line)
    print(line, flush=True)
    for name in ("APPLIANCE_FIGURES", RUN_ENV):
        path = os.environ.get(name)
        if path:
            with open(path, "a", encoding="utf-8") as f:  # one short write: lines stay whole
                f.write(line + "\n")
    return line


def start_run() -> Path:
    """Make the run's figure file and name it in the environment (the controller's)."""
    fd, name = tempfile.mkstemp(prefix="appliance-figures-", suffix=".txt")
    os.close(fd)
    os.environ[RUN_ENV] = name
    return Path(name)


def end_run(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.environ.pop(RUN_ENV, None)


def terminal_summary(terminalreporter: Any) -> None:
    """Print every figure of the run in the terminal summary."""
    path = os.environ.get(RUN_ENV)
    lines = Path(path).read_text(encoding="utf-8").splitlines() if path else FIGURES
    if not lines:
        return
    terminalreporter.write_sep("-", "figures")
    for line in lines:
        terminalreporter.write_line(line)
