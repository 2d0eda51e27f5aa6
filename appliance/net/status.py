"""The network status report: addresses and gateways (netifaces), link state (sysfs), DNS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class IfaceStatus:
    """One interface as a person wants to see it."""

    name: str
    mac: str
    operstate: str
    carrier: bool | None
    ipv4: tuple[str, ...]  # "192.168.1.10/24"


@dataclass(frozen=True)
class Status:
    """All interfaces, the default IPv4 gateway and the DNS servers."""

    interfaces: tuple[IfaceStatus, ...]
    gateway: tuple[str, str] | None  # (address, interface)
    dns: tuple[str, ...]


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _prefixlen(netmask: str) -> int:
    return sum(bin(int(part)).count("1") for part in netmask.split("."))


def _iface(ni: Any, name: str, root: Path) -> IfaceStatus:
    addrs = ni.ifaddresses(name)
    mac = next((a.get("addr", "") for a in addrs.get(ni.AF_LINK, [])), "")
    ipv4 = tuple(f"{a['addr']}/{_prefixlen(a.get('netmask', '255.255.255.255'))}"
                 for a in addrs.get(ni.AF_INET, []) if "addr" in a)
    sysdir = root / "sys/class/net" / name
    carrier = _read(sysdir / "carrier")
    return IfaceStatus(name=name, mac=mac, operstate=_read(sysdir / "operstate") or "unknown",
                       carrier=None if carrier is None else carrier == "1", ipv4=ipv4)


def read_dns(root: Path) -> tuple[str, ...]:
    """The nameservers in ``<root>/etc/resolv.conf``."""
    text = _read(root / "etc/resolv.conf") or ""
    return tuple(line.split()[1] for line in text.splitlines()
                 if line.startswith("nameserver") and len(line.split()) > 1)


def collect(root: Path = Path("/"), only: str | None = None) -> Status:
    """The status of every interface (or just ``only``)."""
    import netifaces as ni

    names = [n for n in ni.interfaces() if only is None or n == only]
    default = ni.gateways().get("default", {}).get(ni.AF_INET)
    gateway = (str(default[0]), str(default[1])) if default else None
    return Status(interfaces=tuple(_iface(ni, n, root) for n in names), gateway=gateway,
                  dns=read_dns(root))


def render(status: Status) -> str:
    """A few lines for the console."""
    lines = []
    for i in status.interfaces:
        carrier = {True: "carrier", False: "no carrier", None: "carrier ?"}[i.carrier]
        addrs = " ".join(i.ipv4) or "no IPv4"
        lines.append(f"{i.name:<8} {i.operstate:<8} {carrier:<10} {i.mac or '-':<17}  {addrs}")
    gw = f"{status.gateway[0]} dev {status.gateway[1]}" if status.gateway else "none"
    lines.append(f"default gateway: {gw}")
    lines.append(f"DNS: {' '.join(status.dns) or 'none'}")
    return "\n".join(lines)
