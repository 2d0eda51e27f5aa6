"""Repeat this suite's FIGURE lines in pytest's terminal summary (see tests/figures.py)."""

from __future__ import annotations

from typing import Any

from tests import figures


def pytest_terminal_summary(terminalreporter: Any) -> None:
    figures.terminal_summary(terminalreporter)
