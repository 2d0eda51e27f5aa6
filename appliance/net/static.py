"""Applying an IPv4 configuration (address, gateway, routes) to an interface with pyroute2."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from appliance.errors import NetworkError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Route:
    """A static route: destination network via a gateway."""

    dst: ipaddress.IPv4Network
    via: ipaddress.IPv4Address


@dataclass(frozen=True)
class IPv4Config:
    """What an interface needs: address/prefix, optional gateway, routes and DNS servers."""

    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None = None
    routes: tuple[Route, ...] = ()
    dns: tuple[ipaddress.IPv4Address, ...] = ()
    search: tuple[str, ...] = ()
    lease_s: int | None = field(default=None, compare=False)
    server: ipaddress.IPv4Address | None = field(default=None, compare=False)  # DHCP's


def parse_interface(text: str) -> ipaddress.IPv4Interface:
    """``192.168.1.10/24`` (the prefix is required)."""
    if "/" not in text:
        raise NetworkError(f"address {text!r} needs a prefix length, e.g. {text}/24")
    try:
        return ipaddress.IPv4Interface(text)
    except ValueError as exc:
        raise NetworkError(f"bad IPv4 address {text!r}: {exc}") from None


def parse_address(text: str, what: str = "address") -> ipaddress.IPv4Address:
    """A plain IPv4 address."""
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        raise NetworkError(f"bad IPv4 {what} {text!r}") from None


def parse_route(text: str) -> Route:
    """``NET/LEN,GATEWAY`` (``10.1.0.0/16,192.168.1.254``)."""
    net, sep, via = text.partition(",")
    if not sep:
        raise NetworkError(f"route {text!r}: expected NET/LEN,GATEWAY")
    try:
        dst = ipaddress.IPv4Network(net)
    except ValueError as exc:
        raise NetworkError(f"route {text!r}: {exc}") from None
    return Route(dst=dst, via=parse_address(via, "route gateway"))


def check(cfg: IPv4Config) -> None:
    """Refuse configurations the kernel would reject with an opaque errno."""
    net = cfg.address.network
    if cfg.address.ip in (net.network_address, net.broadcast_address) and net.prefixlen < 31:
        raise NetworkError(f"{cfg.address} is the network or broadcast address of {net}")
    if cfg.gateway is not None and cfg.gateway not in net:
        raise NetworkError(f"gateway {cfg.gateway} is not on {net}")


def apply(ipr: Any, iface: str, index: int, cfg: IPv4Config) -> None:
    """Replace the interface's IPv4 addresses with ``cfg.address``; add gateway and routes."""
    check(cfg)
    try:
        ipr.flush_addr(index=index, family=socket.AF_INET)
        ipr.addr("add", index=index, address=str(cfg.address.ip),
                 prefixlen=cfg.address.network.prefixlen)
        if cfg.gateway is not None:
            ipr.route("replace", dst="0.0.0.0/0", gateway=str(cfg.gateway), oif=index)
        for route in cfg.routes:
            ipr.route("replace", dst=str(route.dst), gateway=str(route.via), oif=index)
    except Exception as exc:  # pyroute2 raises NetlinkError (an OSError) with errno
        raise NetworkError(f"{iface}: configuring {cfg.address} failed: {exc}") from exc
    log.info("%s: %s gateway %s", iface, cfg.address, cfg.gateway or "none")
