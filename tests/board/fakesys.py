"""A FAKE sysfs/procfs/devicetree tree for board tests.

The MDIO bus and its PHYs cannot exist on the test host (no FEC, no PHY hardware), so
these tests build, under a temporary directory, the files Linux would show on the board:
``proc/device-tree/compatible``, ``sys/bus/mdio_bus/devices/<bus>:<addr>`` with
``phy_id``, ``driver`` and ``attached_dev`` links, ``sys/class/mdio_bus/<bus>/device``
and ``sys/module/<name>/initstate``.  The layout copies what Linux 6.12 shows under
QEMU -M sabrelite (see /work/shared/reference/qemu-sabrelite-boot.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SMSC_LAN911X = 0x0007C0D1  # QEMU's PHY
KSZ9021 = 0x00221611  # the real SABRE Lite's PHY
KSZ8081 = 0x00221560  # the i.MX6UL EVK's PHYs


@dataclass
class FakePhy:
    bus: str  # "2188000.ethernet-1"
    address: int
    phy_id: int
    driver: str | None = None
    iface: str | None = None


class FakeBoard:
    """A directory tree that looks like an i.MX6 board's /proc and /sys."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def compatible(self, *strings: str) -> FakeBoard:
        dt = self.root / "proc/device-tree"
        dt.mkdir(parents=True, exist_ok=True)
        (dt / "compatible").write_bytes(b"".join(s.encode() + b"\0" for s in strings))
        return self

    def phy(self, phy: FakePhy) -> FakeBoard:
        sysfs = self.root / "sys"
        bus_dir = sysfs / "devices/platform/soc" / phy.bus.rsplit("-", 1)[0] / "mdio_bus" / phy.bus
        dev = bus_dir / f"{phy.bus}:{phy.address:02x}"
        dev.mkdir(parents=True, exist_ok=True)
        (dev / "phy_id").write_text(f"0x{phy.phy_id:08x}\n")
        if phy.driver:
            drv = sysfs / "bus/mdio_bus/drivers" / phy.driver
            drv.mkdir(parents=True, exist_ok=True)
            _link(dev / "driver", drv)
        if phy.iface:
            net = sysfs / "devices/virtual/net" / phy.iface
            net.mkdir(parents=True, exist_ok=True)
            _link(dev / "attached_dev", net)
        devices = sysfs / "bus/mdio_bus/devices"
        devices.mkdir(parents=True, exist_ok=True)
        _link(devices / dev.name, dev)
        cls = sysfs / "class/mdio_bus" / phy.bus
        cls.mkdir(parents=True, exist_ok=True)
        if not (cls / "device").is_symlink():
            _link(cls / "device", bus_dir.parent.parent)
        return self

    def module(self, name: str, state: str = "live") -> FakeBoard:
        d = self.root / "sys/module" / name.replace("-", "_")
        d.mkdir(parents=True, exist_ok=True)
        (d / "initstate").write_text(state + "\n")
        return self


def _link(link: Path, target: Path) -> None:
    """A relative symlink, as sysfs makes them."""
    os.symlink(os.path.relpath(target, link.parent), link)


def sabrelite_under_qemu(root: Path, phy_address: int = 6) -> FakeBoard:
    """QEMU -M sabrelite after the modules loaded: SMSC PHY at 6 on the FEC's bus."""
    return (FakeBoard(root).compatible("fsl,imx6q-sabrelite", "fsl,imx6q")
            .phy(FakePhy("2188000.ethernet-1", phy_address, SMSC_LAN911X,
                         "SMSC LAN911x Internal PHY", "eth0")))


def imx6ul_evk(root: Path) -> FakeBoard:
    """The UL EVK: both KSZ8081s on ENET2's bus (as QEMU -M mcimx6ul-evk shows them)."""
    return (FakeBoard(root).compatible("fsl,imx6ul-14x14-evk", "fsl,imx6ul")
            .phy(FakePhy("20b4000.ethernet-1", 1, KSZ8081, "Micrel KSZ8081 or KSZ8091", "eth0"))
            .phy(FakePhy("20b4000.ethernet-1", 2, KSZ8081, "Micrel KSZ8081 or KSZ8091", "eth1")))


def replica(root: Path, dump: list[str]) -> FakeBoard:
    """Rebuild, under ``root``, the MDIO part of a REAL board's sysfs from a dump.

    ``dump`` holds the lines the QEMU test's /init prints: ``PHY name|link|phy_id|driver
    link|attached_dev link`` and ``BUS name|link|device link``; the symlinks are recreated
    with the kernel's own relative targets, so the scan code meets the real layout.
    """
    sysfs = root / "sys"
    for line in dump:
        kind, _, rest = line.partition(" ")
        fields = rest.split("|")
        if kind == "PHY":
            name, target, phy_id, driver, attached = fields
            link = sysfs / "bus/mdio_bus/devices" / name
        elif kind == "BUS":
            name, target, device = fields
            link = sysfs / "class/mdio_bus" / name
        else:
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, link)
        real = (link.parent / target).resolve()
        real.mkdir(parents=True, exist_ok=True)
        if kind == "PHY":
            (real / "phy_id").write_text(phy_id + "\n")
            for attr, to in (("driver", driver), ("attached_dev", attached)):
                if to:
                    os.symlink(to, real / attr)
                    (real / to).resolve().mkdir(parents=True, exist_ok=True)
        else:
            os.symlink(device, real / "device")
    return FakeBoard(root)
