"""Getting an IPv4 lease with busybox ``udhcpc``; pyroute2 then applies it.

Why udhcpc and not pyroute2's client: pyroute2 0.7.7 ships only ``pyroute2.dhcp.client``,
an 82-line example (retries forever with no deadline, raises a bare ``Exception`` on an
unexpected reply, no renew/rebind/release, not documented API); its real DHCP client
came in 0.9.  busybox's udhcpc is maintained, small, already in the image, and has
bounded retries (``-t``/``-T``) and exit-on-failure (``-n``).

udhcpc runs in the foreground and quits once bound (``-f -q -n``); its event script
only writes the lease variables to a file (udhcpc passes our environment through), so
the interface is configured in one place, by :mod:`appliance.net.static`.
Renewing the lease after that is :mod:`appliance.net.keeper`'s job.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import tempfile
from pathlib import Path

from appliance.errors import NetworkError
from appliance.net.static import IPv4Config, parse_address
from appliance.run import run

log = logging.getLogger(__name__)

LEASE_ENV = "APPLIANCE_DHCP_LEASE"
# The event hook: record bound/renew variables, ignore other events. Shell builtins only
# (no applet links needed); udhcpc runs it synchronously and we read the file after it exits.
SCRIPT = """#!/bin/sh
case "$1" in
bound|renew)
    {
        echo "ip=$ip"
        echo "mask=$mask"
        echo "subnet=$subnet"
        echo "router=$router"
        echo "dns=$dns"
        echo "domain=$domain"
        echo "lease=$lease"
        echo "serverid=$serverid"
    } > "$APPLIANCE_DHCP_LEASE"
    ;;
esac
exit 0
"""


def udhcpc_argv() -> list[str]:
    """How to run udhcpc here: the applet link, or ``busybox udhcpc``."""
    if exe := shutil.which("udhcpc"):
        return [exe]
    if exe := shutil.which("busybox"):
        return [exe, "udhcpc"]
    raise NetworkError("DHCP needs busybox's udhcpc, which is not installed "
                       "(or use --address/--gateway for a static address)")


def parse_lease(text: str) -> IPv4Config:
    """The IPv4 configuration in the script's ``key=value`` lines."""
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    if not env.get("ip"):
        raise NetworkError("udhcpc reported a lease without an address")
    prefix = env.get("mask") or ""
    if not prefix.isdigit():
        prefix = str(ipaddress.IPv4Network(f"0.0.0.0/{env.get('subnet') or '255.255.255.0'}")
                     .prefixlen)
    address = ipaddress.IPv4Interface(f"{env['ip']}/{prefix}")
    routers = env.get("router", "").split()
    gateway = parse_address(routers[0], "router") if routers else None
    if gateway is not None and gateway not in address.network:
        log.warning("DHCP router %s is off-link for %s; ignoring it", gateway, address)
        gateway = None
    lease = env.get("lease", "")
    server = parse_address(env["serverid"], "DHCP server id") if env.get("serverid") else None
    return IPv4Config(address=address, gateway=gateway,
                      dns=tuple(parse_address(d, "DNS server") for d in env.get("dns", "").split()),
                      search=tuple(env.get("domain", "").split()),
                      lease_s=int(lease) if lease.isdigit() else None, server=server)


def obtain(iface: str, timeout: float = 30.0,
           request: ipaddress.IPv4Address | None = None) -> IPv4Config:
    """Run udhcpc on ``iface`` (up, with carrier) and return the lease's configuration.

    ``request``: ask for this address (udhcpc ``-r``), as a renewal of a held lease does.
    """
    tries = max(1, round(timeout / 2))
    with tempfile.TemporaryDirectory(prefix="appliance-dhcp-") as tmp:
        script, lease = Path(tmp) / "udhcpc.script", Path(tmp) / "lease"
        script.write_text(SCRIPT)
        script.chmod(0o700)
        argv = [*udhcpc_argv(), "-f", "-q", "-n", "-i", iface, "-t", str(tries), "-T", "2",
                "-s", str(script), *(["-r", str(request)] if request else [])]
        proc = run(argv, error=NetworkError, what=iface, env={LEASE_ENV: str(lease)},
                   timeout=timeout + 10, check=False)
        log.debug("udhcpc: %s", proc.stderr.strip())
        if proc.returncode != 0 or not lease.exists():
            raise NetworkError(f"{iface}: no DHCP lease after {tries} tries in about "
                               f"{2 * tries} s (is a DHCP server on this network?)")
        cfg = parse_lease(lease.read_text())
    log.info("%s: DHCP lease %s, router %s, %s s", iface, cfg.address, cfg.gateway,
             cfg.lease_s)
    return cfg
