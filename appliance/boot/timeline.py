"""The boot timeline: each boot step's start and duration, shown and kept.

Each step is printed on the console when it ends (``[  3.21s] network up (1.02s)``)
and the whole timeline is written as JSON to ``/run/nbdroot/timeline.json`` so the
booted system (and the system tests) can read it.  Times are seconds since the
kernel started (CLOCK_BOOTTIME), so they line up with the kernel's own log.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TextIO

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Step:
    """One boot step: what it was, when it started, how long it took, how it ended."""

    name: str
    start: float
    duration: float = 0.0
    ok: bool = True
    detail: str = ""


@dataclass
class Timeline:
    """Collects steps; prints each on ``out`` as it ends; saves them as JSON."""

    out: TextIO | None = None
    steps: list[Step] = field(default_factory=list)

    @staticmethod
    def now() -> float:
        """Seconds since boot (CLOCK_BOOTTIME)."""
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    @contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Time the ``with`` body as step ``name``; an exception marks it failed and propagates."""
        entry = Step(name, self.now())
        self.steps.append(entry)
        try:
            yield entry
        except BaseException as exc:
            entry.ok = False
            entry.detail = entry.detail or str(exc)
            raise
        finally:
            entry.duration = self.now() - entry.start
            self._show(entry)

    def _show(self, entry: Step) -> None:
        state = "" if entry.ok else " FAILED"
        detail = f": {entry.detail}" if entry.detail else ""
        end = entry.start + entry.duration
        line = f"[{end:7.2f}s] {entry.name} ({entry.duration:.2f}s){state}{detail}"
        log.info("%s", line)
        if self.out is not None:
            print(f"nbdroot: {line}", file=self.out, flush=True)

    def save(self, path: str) -> None:
        """Write the steps as JSON to ``path`` (atomically: temp file then rename)."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump([asdict(s) for s in self.steps], f, indent=1)
        os.replace(tmp, path)
