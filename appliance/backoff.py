"""The one backoff policy: ``initial * 2**n`` seconds after failed attempt ``n``, capped.

Used by the initial connect's retries (:mod:`appliance.transport.connect`), the relay's
reconnects (:mod:`appliance.relay.policy`) and the boot's wait for the server
(:mod:`appliance.boot.sequence`).
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_DOUBLINGS = 30  # 2**30 * any sane initial is past any cap; keeps the float finite


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff from ``initial`` seconds, never more than ``maximum``."""

    initial: float
    maximum: float

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("backoff needs initial >= 0 and maximum >= 0 seconds")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        return float(min(self.maximum, self.initial * (2 ** min(attempt, MAX_DOUBLINGS))))
