"""Keeping a DHCP lease renewed for as long as the board runs.

The boot's DHCP is one exchange (``udhcpc -q``); a board on a short lease would keep an
address the server may hand to another board.  :func:`keep` renews at T1 (half the
lease, RFC 2131) by asking for the held address again (``udhcpc -q -r ADDR``: the server
extends the same lease), and retries a failed renewal at half the time left, never
later than the expiry.  The address on the interface is never removed here: udhcpc's
event script only records the lease (see :mod:`appliance.net.dhcp`).

The schedule is pure (:func:`renew_after`, :func:`retry_after`); :func:`keep` is the
loop around the real udhcpc.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from appliance.errors import NetworkError
from appliance.net import dhcp
from appliance.net.static import IPv4Config

log = logging.getLogger(__name__)

RENEW_FRACTION = 0.5  # T1
MIN_RETRY_S = 5.0
DEFAULT_LEASE_S = 3600  # a lease without a time: renew hourly anyway
RENEW_TIMEOUT_S = 10.0

Report = Callable[[str], None]


def renew_after(lease_s: int | None) -> float:
    """Seconds from a bind to its renewal (T1)."""
    return max(MIN_RETRY_S, (lease_s or DEFAULT_LEASE_S) * RENEW_FRACTION)


def retry_after(remaining_s: float) -> float:
    """Seconds until the next try after a failed renewal, ``remaining_s`` before expiry."""
    return max(MIN_RETRY_S, remaining_s / 2)


def keep(iface: str, cfg: IPv4Config, report: Report, *, rounds: int | None = None,
         sleep: Callable[[float], None] = time.sleep) -> IPv4Config:
    """Renew ``cfg``'s lease on ``iface`` forever (or ``rounds`` renewals); the last lease."""
    bound = time.monotonic()
    wait = renew_after(cfg.lease_s)
    done = 0
    while rounds is None or done < rounds:
        sleep(wait)
        expiry = bound + (cfg.lease_s or DEFAULT_LEASE_S)
        try:
            new = dhcp.obtain(iface, RENEW_TIMEOUT_S, request=cfg.address.ip)
        except NetworkError as exc:
            wait = retry_after(expiry - time.monotonic())
            report(f"{iface}: renewal failed ({exc}); next try in {wait:.0f} s")
            continue
        if new.address != cfg.address:
            report(f"{iface}: the server offered {new.address} instead of {cfg.address}; "
                   f"keeping {cfg.address} until it expires")
            wait = retry_after(expiry - time.monotonic())
            continue
        cfg, bound, done = new, time.monotonic(), done + 1
        wait = renew_after(cfg.lease_s)
        report(f"{iface}: lease of {cfg.address} renewed for {cfg.lease_s} s; "
               f"next renewal in {wait:.0f} s")
    return cfg
