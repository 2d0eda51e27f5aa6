"""How the relay reconnects: backoff between attempts and when to give up on requests."""

from __future__ import annotations

from dataclasses import dataclass

from appliance.backoff import Backoff
from appliance.config import validate
from appliance.errors import UsageError


@dataclass(frozen=True)
class ReconnectPolicy:
    """Backoff ``initial * 2**n`` capped at ``maximum``; ``deadline`` seconds of outage after
    which the requests waiting for the server are failed with EIO (None: wait forever, the
    right thing for a root disk).  Reconnect attempts go on after the deadline; requests
    arriving while the server is still away are then failed at once."""

    initial: float = 0.1
    maximum: float = 5.0
    deadline: float | None = None
    connect_timeout: float = 10.0
    # With requests outstanding and not one byte from the server for this long, the
    # connection counts as dead (a cut cable sends no RST).  A slow but live server only
    # costs a reconnect and a replay, which is safe.
    io_timeout: float | None = 60.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.connect_timeout <= 0:
            raise UsageError("reconnect backoff needs 0 < initial <= maximum, timeout > 0")
        if self.io_timeout is not None and self.io_timeout <= 0:
            raise UsageError("the I/O timeout must be > 0 seconds")
        if self.deadline is not None and self.deadline < 0:
            raise UsageError("the reconnect deadline must be >= 0 seconds or 'forever'")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        return Backoff(self.initial, self.maximum).delay(attempt)


def parse_deadline(text: str) -> float | None:
    """``forever`` (or ``inf``, ``never``) -> None, else a non-negative number of seconds."""
    try:
        return validate.parse_deadline(text, allow_zero=True)  # the one parser
    except ValueError as exc:
        raise UsageError(f"{exc}, not {text!r}") from None
