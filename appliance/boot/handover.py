"""Handing the root disk's interface over to the root's systemd-networkd.

A root whose systemd-networkd manages the interface that carries / (DHCP on eth0, as
Debian users configure it) would otherwise drop what the initramfs configured: by
default networkd flushes foreign addresses when it takes a link, drops the DHCP address
when its lease ends or the daemon stops (and sends a DHCP release), and drops the
configuration when the carrier goes -- each one cuts the relay off from the NBD server.
``KeepConfiguration=yes`` is networkd's own answer for a root that "relies on this
connection" (systemd.network(5)); it is the default only for a root it recognises as a
network filesystem, which an ext4 on /dev/nbd0 is not.

So, as a distribution's initramfs does, the agent writes a runtime ``.network`` file
before switch_root, in /run/systemd/network (the /run it moves into the root).  Its name
sorts first (``00-nbdroot-IFACE.network``), so networkd takes it for the interface
instead of the root's own file, always with ``KeepConfiguration=yes`` and
``IgnoreCarrierLoss=yes``.  What else it says depends on who keeps the address (the
:data:`Mode`):

- ``kept``: the agent's lease keeper (:mod:`appliance.net.keeper`) renews the DHCP lease,
  so networkd runs no DHCP client of its own on the interface (two clients would renew
  one lease and each rewrite the address);
- ``dhcp``: no keeper runs (it failed to start), so networkd's DHCP client takes the lease
  over, asking for the address the board holds;
- ``static``: the static address, gateway and DNS the board has.

A root without networkd never reads it.

Next to it goes a runtime ``.link`` file for udev: without it, the root's udev renames the
interface while it is up (Linux 6.12 allows that: ``end0: renamed from eth0 (while UP)``,
the predictable name of a devicetree NIC), and the root's own ``Name=eth0`` files no
longer match it.  The ``.link`` keeps the kernel's name and leaves the MAC address alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from appliance.net.static import IPv4Config

RUNTIME_DIR = Path("/run/systemd/network")

Mode = Literal["kept", "dhcp", "static"]
"""Who keeps the interface's address after switch_root (see the module's docstring)."""


def network_file(iface: str, cfg: IPv4Config, *, mode: Mode) -> str:
    """The ``.network`` text that keeps ``iface`` as the boot configured it."""
    lines = ["# Written by the nbdroot-imx6 initramfs: this interface carries the NBD root",
             "# disk, so networkd must never flush it (see appliance/boot/handover.py).",
             "[Match]", f"Name={iface}", "", "[Network]"]
    if mode == "kept":
        lines += ["# The agent's lease keeper renews the DHCP lease of this address.",
                  "DHCP=no"]
    elif mode == "dhcp":
        lines.append("DHCP=ipv4")
    else:
        lines.append(f"Address={cfg.address}")
        if cfg.gateway is not None:
            lines.append(f"Gateway={cfg.gateway}")
        lines += [f"DNS={a}" for a in cfg.dns]
        if cfg.search:
            lines.append(f"Domains={' '.join(cfg.search)}")
    lines += ["KeepConfiguration=yes", "IgnoreCarrierLoss=yes"]
    if mode == "dhcp":
        lines += ["", "[DHCPv4]", f"RequestAddress={cfg.address.ip}"]
    elif mode == "static":
        for route in cfg.routes:
            lines += ["", "[Route]", f"Destination={route.dst}", f"Gateway={route.via}"]
    return "\n".join(lines) + "\n"


def link_file(iface: str) -> str:
    """The udev ``.link`` text that keeps ``iface``'s name and MAC address as they are."""
    return "\n".join([
        "# Written by the nbdroot-imx6 initramfs: this interface carries the NBD root",
        "# disk; keep its name (the root's .network files match it) and its MAC address.",
        "[Match]", f"OriginalName={iface}", "", "[Link]", "NamePolicy=", f"Name={iface}",
        "MACAddressPolicy=none"]) + "\n"


def write(iface: str, cfg: IPv4Config, *, mode: Mode, directory: Path = RUNTIME_DIR) -> Path:
    """Write the runtime ``.network`` and ``.link`` for ``iface`` into ``directory``;
    the ``.network``'s path."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"00-nbdroot-{iface}"
    _replace(directory / f"{stem}.link", link_file(iface))
    return _replace(directory / f"{stem}.network", network_file(iface, cfg, mode=mode))


def _replace(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path
