"""PHY address policy: compare the configured MDIO address with what answers on the bus.

* configured address present -> use it;
* absent, but another PHY answers -> :class:`BoardError` naming the address found, so the
  user can fix the setting (or the devicetree) instead of guessing;
* ``auto`` -> follow whatever answers (the lowest address when several do).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import BoardError
from board.mdio import Phy, scan
from board.profile import PhyAddr

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Selection:
    """The PHY chosen for one FEC, and what else answers on its bus."""

    owner: str
    configured: PhyAddr
    phy: Phy
    others: tuple[Phy, ...]


def _on_bus(phys: list[Phy], owner: str) -> list[Phy]:
    return [p for p in phys if p.owner == owner] if owner else list(phys)


def choose(phys: list[Phy], owner: str, configured: PhyAddr) -> Selection:
    """Apply the policy to scanned ``phys`` for the MDIO bus owned by ``owner``."""
    found = _on_bus(phys, owner)
    where = owner or "any MDIO bus"
    if not found:
        raise BoardError(f"no PHY answers on {where}: are the PHY driver modules loaded and "
                         "has the FEC probed? (see dmesg)")
    if configured == "auto":
        phy = found[0]
        if len(found) > 1:
            log.warning("phy=auto: %d PHYs on %s, using the lowest address %d",
                        len(found), where, phy.address)
    else:
        hits = [p for p in found if p.address == configured]
        if not hits:
            addrs = ", ".join(str(p.address) for p in found)
            one = "one" if len(found) == 1 else "PHYs"
            raise BoardError(f"PHY configured at MDIO address {configured} but found {one} at "
                             f"{addrs} on {where}; set phy={found[0].address} or phy=auto")
        phy = hits[0]
    log.info("PHY for %s: %s", where, phy.describe())
    return Selection(owner=owner, configured=configured, phy=phy,
                     others=tuple(p for p in found if p is not phy))


def select_phy(owner: str, configured: PhyAddr, root: Path = Path("/")) -> Selection:
    """Scan sysfs under ``root`` and apply the policy."""
    return choose(scan(root), owner, configured)
