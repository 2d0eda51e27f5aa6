"""Board bring-up in one call: detect the board, load its modules, check its PHY.

This is what the boot path runs before configuring the network: the profile from the
devicetree, ``modprobe`` of its modules in order (:func:`load_modules`, which the boot
starts early, in the background), then the PHY policy on what the kernel found on the
MDIO bus (waiting briefly, since the FEC may finish probing, and
register its bus, just after ``modprobe fec`` returns).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from appliance.deadline import Deadline
from appliance.errors import BoardError
from board.mdio import scan
from board.modules import Loaded, ModuleLoader
from board.phy import Selection, choose
from board.profile import Ethernet, PhyAddr, Profile, detect

log = logging.getLogger(__name__)

POLL_S = 0.1


@dataclass(frozen=True)
class BringUp:
    """What bring-up found and did."""

    profile: Profile
    port: Ethernet
    modules: tuple[Loaded, ...]
    selection: Selection
    restart_failed: tuple[str, ...] = ()  # restart modules that did not load, with why


def wait_for_phy(root: Path, port: Ethernet, configured: PhyAddr, timeout: float) -> Selection:
    """Apply the PHY policy, retrying while no PHY has appeared yet (bounded by ``timeout``)."""
    deadline = Deadline(timeout)
    while True:
        phys = scan(root)
        mine = [p for p in phys if not port.mdio_owner or p.owner == port.mdio_owner]
        if mine or deadline.expired:
            return choose(phys, port.mdio_owner, configured)
        time.sleep(POLL_S)


Modules = tuple[tuple[Loaded, ...], tuple[str, ...]]  # what load_modules returns


def bring_up(root: Path = Path("/"), *, iface: str | None = None, phy: PhyAddr | None = None,
             profile: Profile | None = None, loader: ModuleLoader | None = None,
             phy_timeout: float = 5.0, loaded: Modules | None = None) -> BringUp:
    """Detect, load modules, select the PHY; a BoardError says which step failed and why.

    ``phy`` overrides the profile's address (the stored setting) and ``profile`` the
    detected board; a port whose profile names no MDIO bus (the generic i.MX6 one)
    accepts a PHY on any bus.  ``loaded``: :func:`load_modules` of this profile, already
    run (the boot runs it in the background during the console countdown).
    """
    profile = profile or detect(root)
    port = profile.port(iface)
    modules, restart_failed = loaded or load_modules(profile, loader or ModuleLoader(root=root))
    configured = port.phy if phy is None else phy
    selection = wait_for_phy(root, port, configured, phy_timeout)
    log.info("%s: %s, PHY %s", profile.name, port.iface, selection.phy.describe())
    return BringUp(profile, port, modules, selection, restart_failed)


def load_modules(profile: Profile, loader: ModuleLoader) -> Modules:
    """The profile's modules in order (a BoardError names the one that failed), then its
    restart modules, best effort: (what happened to each, the restart ones that failed)."""
    return tuple(loader.load(profile.load_order)), load_restart(loader, profile)


def load_restart(loader: ModuleLoader, profile: Profile) -> tuple[str, ...]:
    """Load the profile's restart modules, best effort (the board runs without them, but
    cannot reboot); the ones that failed, each with the reason, also logged."""
    failed = []
    for name in profile.restart_modules:
        try:
            loader.load_one(name)
        except BoardError as exc:
            failed.append(str(exc))
    if failed:
        log.warning("the board will not be able to reboot: %s", "; ".join(failed))
    return tuple(failed)
