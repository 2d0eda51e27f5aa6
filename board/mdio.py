"""The MDIO scan: which PHYs the kernel found, read from sysfs under one root path.

Linux names each PHY on the ``mdio_bus`` bus ``<bus id>:<address, 2 hex digits>``,
e.g. ``2188000.ethernet-1:06``; the bus id is the owning device's name plus ``-N``.
Each PHY directory has ``phy_id`` (``0x0007c0d1``), a ``driver`` link once a driver is
bound and an ``attached_dev`` link once a network interface uses it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MDIO_DEVICES = "sys/bus/mdio_bus/devices"
_NAME = re.compile(r"(?P<bus>.+):(?P<addr>[0-9a-fA-F]{2})")


@dataclass(frozen=True)
class Phy:
    """One PHY the kernel found on an MDIO bus."""

    name: str  # 2188000.ethernet-1:06
    bus: str  # 2188000.ethernet-1
    owner: str  # 2188000.ethernet: the device whose MDIO bus this is
    address: int
    phy_id: int | None
    driver: str | None
    iface: str | None  # the network interface attached to it, if any

    def describe(self) -> str:
        """One line for a person: address, id, driver, interface."""
        pid = f"0x{self.phy_id:08x}" if self.phy_id is not None else "?"
        drv = self.driver or "no driver"
        att = f", {self.iface}" if self.iface else ""
        return f"{self.owner} address {self.address}: phy_id {pid} ({drv}{att})"


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def _read_id(path: Path) -> int | None:
    try:
        return int(path.read_text().strip(), 16)
    except (OSError, ValueError):
        return None


def _owner(root: Path, bus: str) -> str:
    """The device owning MDIO bus ``bus``: its class link if present, else the name's prefix."""
    link = _link_name(root / "sys/class/mdio_bus" / bus / "device")
    if link:
        return link
    return re.sub(r"-\d+$", "", bus)


def scan(root: Path = Path("/")) -> list[Phy]:
    """Every PHY under ``<root>/sys/bus/mdio_bus/devices``, sorted by bus and address."""
    base = root / MDIO_DEVICES
    if not base.is_dir():
        log.debug("%s does not exist: no MDIO bus (libphy not loaded?)", base)
        return []
    phys = []
    for entry in base.iterdir():
        m = _NAME.fullmatch(entry.name)
        if not m:
            log.debug("skipping %s: not <bus>:<addr>", entry.name)
            continue
        bus = m["bus"]
        phys.append(Phy(name=entry.name, bus=bus, owner=_owner(root, bus),
                        address=int(m["addr"], 16), phy_id=_read_id(entry / "phy_id"),
                        driver=_link_name(entry / "driver"),
                        iface=_link_name(entry / "attached_dev")))
    return sorted(phys, key=lambda p: (p.bus, p.address))
