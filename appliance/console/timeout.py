"""A monotonic deadline (labgrid's Timeout): ``remaining`` and ``expired``, None = never."""

from __future__ import annotations

import time


class Timeout:
    """A monotonic deadline; None means never."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds

    @property
    def remaining(self) -> float | None:
        """Seconds left (0 when expired), None if unbounded."""
        return None if self.end is None else max(0.0, self.end - time.monotonic())

    @property
    def expired(self) -> bool:
        """True once the deadline passed."""
        return self.end is not None and time.monotonic() >= self.end
