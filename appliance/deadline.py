"""The one deadline: a point on the monotonic clock; ``remaining``, ``expired``; None = never."""

from __future__ import annotations

import time


class Deadline:
    """``seconds`` from now on the monotonic clock (labgrid's Timeout); None means never."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.start = time.monotonic()
        self.end = None if seconds is None else self.start + seconds

    @property
    def elapsed(self) -> float:
        """Seconds since the deadline was set."""
        return time.monotonic() - self.start

    @property
    def remaining(self) -> float | None:
        """Seconds left (0 when expired), None if unbounded."""
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once the deadline passed."""
        return self.end is not None and time.monotonic() >= self.end
