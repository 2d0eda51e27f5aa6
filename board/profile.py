"""Board profiles: loading the TOML files under ``board/profiles`` and detecting the board.

A profile is data (one file per board): compatible strings, console UART, the kernel
modules the FEC needs before it can probe, and per Ethernet port the devicetree path of
the FEC, the device owning the MDIO bus its PHY sits on and the PHY's MDIO address.
Detection reads ``<root>/proc/device-tree/compatible`` (NUL-separated, most specific
first) and picks the first profile that lists one of those strings, so a specific
board wins over the generic i.MX6 profile.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from appliance.errors import BoardError

log = logging.getLogger(__name__)

PROFILE_DIR = Path(__file__).with_name("profiles")
MDIO_ADDR_MAX = 31

PhyAddr = int | Literal["auto"]


def parse_phy(value: object, where: str = "phy") -> PhyAddr:
    """An MDIO address 0..31 or ``"auto"``, from a profile, a setting or the command line."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "auto":
            return "auto"
        try:
            value = int(text, 0)
        except ValueError:
            raise BoardError(f"{where}={value!r}: expected an MDIO address 0-31 "
                             "or 'auto'") from None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MDIO_ADDR_MAX:
        raise BoardError(f"{where}={value!r}: an MDIO address is 0-{MDIO_ADDR_MAX} (or 'auto')")
    return value


def device_name(dt_path: str) -> str:
    """The platform device name of a DT node: ``.../ethernet@2188000`` -> ``2188000.ethernet``."""
    node = dt_path.rstrip("/").rsplit("/", 1)[-1]
    name, _, unit = node.partition("@")
    return f"{unit}.{name}" if unit else name


@dataclass(frozen=True)
class Ethernet:
    """One FEC port: its interface, DT node, MDIO bus owner and PHY address."""

    iface: str
    fec: str  # devicetree path; "" = the alias ethernetN
    mdio: str  # platform device whose MDIO bus has the PHY; "" = the FEC's own
    phy: PhyAddr

    @property
    def mdio_owner(self) -> str:
        """The device name owning the PHY's MDIO bus (``2188000.ethernet``), or ""."""
        return self.mdio or (device_name(self.fec) if self.fec else "")


@dataclass(frozen=True)
class Profile:
    """What the agent knows about one board."""

    key: str
    name: str
    compatible: tuple[str, ...]
    console: str
    modules: tuple[str, ...]
    phy_modules: tuple[str, ...]
    fec_module: str
    ethernet: tuple[Ethernet, ...]
    # The SoC's restart handler (the i.MX watchdog): loaded after the FEC, best effort.
    # Without it the kernel cannot reset the board: reboot ends "Reboot failed -- System
    # halted".  The root has no kernel modules of its own, so its udev cannot load it.
    restart_modules: tuple[str, ...] = ()

    @property
    def load_order(self) -> tuple[str, ...]:
        """Every module to load, in order: prerequisites, PHY drivers, then the FEC driver."""
        return (*self.modules, *self.phy_modules, self.fec_module)

    def port(self, iface: str | None = None) -> Ethernet:
        """The Ethernet port named ``iface`` (default: the first)."""
        if iface is None:
            return self.ethernet[0]
        for eth in self.ethernet:
            if eth.iface == iface:
                return eth
        names = ", ".join(e.iface for e in self.ethernet)
        raise BoardError(f"{self.name} has no Ethernet port {iface!r} (it has {names})")


def _strings(data: dict[str, object], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise BoardError(f"{where}: {key!r} must be a list of non-empty strings")
    return tuple(value)


def _text(data: dict[str, object], key: str, where: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise BoardError(f"{where}: {key!r} must be a string")
    return value


def _ethernet(item: object, where: str) -> Ethernet:
    if not isinstance(item, dict):
        raise BoardError(f"{where}: each [[ethernet]] must be a table")
    return Ethernet(iface=_text(item, "iface", where), fec=_text(item, "fec", where, ""),
                    mdio=_text(item, "mdio", where, ""),
                    phy=parse_phy(item.get("phy", "auto"), f"{where}: phy"))


def load_profile(path: Path) -> Profile:
    """Parse and check one profile file."""
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BoardError(f"cannot read board profile {where}: {exc}") from exc
    ports = data.get("ethernet", [])
    if not isinstance(ports, list) or not ports:
        raise BoardError(f"{where}: needs at least one [[ethernet]] table")
    compatible = _strings(data, "compatible", where)
    if not compatible:
        raise BoardError(f"{where}: 'compatible' is empty")
    return Profile(key=path.stem, name=_text(data, "name", where), compatible=compatible,
                   console=_text(data, "console", where),
                   modules=_strings(data, "modules", where),
                   phy_modules=_strings(data, "phy_modules", where),
                   fec_module=_text(data, "fec_module", where, "fec"),
                   ethernet=tuple(_ethernet(p, where) for p in ports),
                   restart_modules=_strings(data, "restart_modules", where))


def load_profiles(directory: Path = PROFILE_DIR) -> list[Profile]:
    """Every profile in ``directory``, sorted by file name."""
    return [load_profile(p) for p in sorted(directory.glob("*.toml"))]


def get_profile(key: str, directory: Path = PROFILE_DIR) -> Profile:
    """The profile named ``key`` (its file name without ``.toml``)."""
    path = directory / f"{key}.toml"
    if not path.is_file():
        known = ", ".join(p.key for p in load_profiles(directory))
        raise BoardError(f"no board profile {key!r} (known: {known})")
    return load_profile(path)


def split_compatible(raw: bytes) -> list[str]:
    """A devicetree stringlist (NUL-separated) as a list."""
    return [s.decode("ascii", "replace") for s in raw.split(b"\0") if s]


def read_compatible(root: Path = Path("/")) -> list[str]:
    """The running board's compatible strings, most specific first."""
    path = root / "proc/device-tree/compatible"
    try:
        return split_compatible(path.read_bytes())
    except OSError as exc:
        raise BoardError(f"cannot read {path}: {exc.strerror} (no devicetree: not an i.MX6 "
                         "board?)") from exc


def match_profile(compatible: list[str], profiles: list[Profile]) -> Profile:
    """The profile for the most specific compatible string any profile lists."""
    for entry in compatible:
        for profile in profiles:
            if entry in profile.compatible:
                log.debug("compatible %r -> profile %s", entry, profile.key)
                return profile
    shown = ", ".join(compatible) or "(empty)"
    raise BoardError(f"unsupported board: no profile matches compatible {shown}")


def detect(root: Path = Path("/"), directory: Path = PROFILE_DIR) -> Profile:
    """The profile of the board whose devicetree is under ``root``."""
    return match_profile(read_compatible(root), load_profiles(directory))
