"""Finding an interface, setting it up and waiting for carrier (pyroute2)."""

from __future__ import annotations

import logging
import time
from typing import Any

from appliance.deadline import Deadline
from appliance.errors import NetworkError

log = logging.getLogger(__name__)

POLL_S = 0.1


def ifindex(ipr: Any, iface: str, timeout: float = 0.0) -> int:
    """The index of ``iface``, waiting up to ``timeout`` s for it to appear (the FEC may
    still be probing after ``modprobe fec``); NetworkError listing the interfaces if absent."""
    deadline = Deadline(timeout)
    while not (found := ipr.link_lookup(ifname=iface)) and not deadline.expired:
        time.sleep(POLL_S)
    if not found:
        names = sorted(str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links())
        raise NetworkError(f"no network interface {iface!r} (have: {', '.join(names)}); "
                           "did the FEC probe? try 'appliance board detect'")
    return int(found[0])


def set_up(ipr: Any, index: int) -> None:
    """Administratively up (the MAC is left as the kernel set it)."""
    ipr.link("set", index=index, state="up")


def has_carrier(ipr: Any, index: int) -> bool:
    """True when the link reports carrier."""
    link = ipr.get_links(index)[0]
    return bool(link.get_attr("IFLA_CARRIER"))


def wait_carrier(ipr: Any, iface: str, index: int, timeout: float) -> float:
    """Wait until ``iface`` has carrier; return the seconds waited or raise NetworkError."""
    deadline = Deadline(timeout)
    while True:
        if has_carrier(ipr, index):
            waited = deadline.elapsed
            log.info("%s: carrier after %.1f s", iface, waited)
            return waited
        if deadline.expired:
            raise NetworkError(f"{iface}: no carrier after {timeout:g} s — cable?")
        time.sleep(min(POLL_S, deadline.remaining or 0.0))
