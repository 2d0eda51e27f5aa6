"""``net up``: bring an interface up, wait for carrier, configure it statically or by DHCP."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from appliance.net import dhcp, link, resolv, static
from appliance.net.static import IPv4Config

log = logging.getLogger(__name__)

IFACE_TIMEOUT_S = 5.0
CARRIER_TIMEOUT_S = 10.0
DHCP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Result:
    """What ``bring_up`` did."""

    iface: str
    config: IPv4Config
    carrier_s: float
    resolv_conf: Path | None


def bring_up(iface: str, cfg: IPv4Config | None, *, root: Path = Path("/"),
             iface_timeout: float = IFACE_TIMEOUT_S,
             carrier_timeout: float = CARRIER_TIMEOUT_S,
             dhcp_timeout: float = DHCP_TIMEOUT_S) -> Result:
    """Wait for the interface, set it up, wait for carrier, then apply ``cfg`` (static) or
    a DHCP lease when ``cfg`` is None; DNS servers go to ``<root>/etc/resolv.conf``."""
    from pyroute2.iproute.linux import IPRoute  # slow on the board: only when needed

    with IPRoute() as ipr:
        index = link.ifindex(ipr, iface, iface_timeout)
        link.set_up(ipr, index)
        waited = link.wait_carrier(ipr, iface, index, carrier_timeout)
        if cfg is None:
            cfg = dhcp.obtain(iface, dhcp_timeout)
        static.apply(ipr, iface, index, cfg)
    path = resolv.write(root, cfg.dns, cfg.search) if cfg.dns else None
    return Result(iface=iface, config=cfg, carrier_s=waited, resolv_conf=path)
