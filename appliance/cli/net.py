"""``appliance net``: bring the Ethernet up (static or DHCP) and show the network status."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.errors import UsageError

HELP = "network: bring an interface up (static or DHCP), show the status"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``net up`` and ``net status``."""
    p = subparsers.add_parser("net", help=HELP, description=HELP + ".")
    sub = p.add_subparsers(dest="net_command", metavar="SUBCOMMAND", required=True)

    u = sub.add_parser(
        "up", help="link up, wait for carrier, configure IPv4",
        description="Set the interface up (its MAC is kept), wait for carrier, then configure "
        "IPv4: a DHCP lease (busybox udhcpc; the default) or --address with optional "
        "--gateway/--route/--dns. DNS servers go to /etc/resolv.conf.",
        epilog="examples: appliance net up --dhcp ; appliance net up --address 192.168.1.10/24 "
        "--gateway 192.168.1.1 --dns 192.168.1.1")
    u.add_argument("--iface", default="eth0", help="interface (default: eth0)")
    mode = u.add_mutually_exclusive_group()
    mode.add_argument("--dhcp", action="store_true", help="get the address by DHCP (default)")
    mode.add_argument("--address", metavar="A/N", help="static address with prefix length")
    u.add_argument("--gateway", metavar="G", help="default gateway (static only)")
    u.add_argument("--route", metavar="NET/LEN,GW", action="append", default=[],
                   help="extra static route (repeatable)")
    u.add_argument("--dns", metavar="D", action="append", default=[],
                   help="DNS server (repeatable; static only)")
    u.add_argument("--iface-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for the interface to appear (default: 5)")
    u.add_argument("--carrier-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for carrier (default: 10)")
    u.add_argument("--dhcp-timeout", type=float, default=30.0, metavar="S",
                   help="seconds to try DHCP (default: 30)")
    _root(u)
    u.set_defaults(func=_up)

    s = sub.add_parser("status", help="interfaces, addresses, gateway, DNS",
                       description="Show each interface's state, carrier, MAC and IPv4 "
                       "addresses, the default gateway and the DNS servers.")
    s.add_argument("--iface", help="only this interface")
    _root(s)
    s.set_defaults(func=_status)

    k = sub.add_parser(
        "keep-lease", help="get a DHCP lease on an up interface and keep renewing it",
        description="Get a DHCP lease (the address is not applied; `net up` does that) and "
        "start the lease keeper the boot starts: a '@' process renewing it at T1 (unicast), "
        "rebinding at T2 (broadcast) and asking for the same address again if it lapses, "
        "never removing it; its state goes to RUN_DIR/lease.json (`appliance status`). "
        "The keeper runs in its own session, as at boot: Ctrl-C here leaves it running; "
        "stop it with kill PID (the pid is printed), renew at once with kill -USR1 PID.")
    k.add_argument("--iface", default="eth0", help="interface (default: eth0)")
    k.add_argument("--dhcp-timeout", type=float, default=30.0, metavar="S",
                   help="first lease within S seconds (default 30)")
    k.add_argument("--rounds", type=int, metavar="N", help="stop after N renewals")
    k.add_argument("--run-dir", type=Path, default=Path("/run/nbdroot"),
                   help="where the state file lease.json goes (default: /run/nbdroot)")
    k.add_argument("--detach", action="store_true",
                   help="return once the keeper runs (default: wait until it ends)")
    k.set_defaults(func=_keep_lease)


def _root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=Path("/"),
                   help="find etc/resolv.conf and sysfs under this directory (default: /)")


def _up(args: argparse.Namespace) -> int:
    from appliance.net import static
    from appliance.net.up import bring_up

    if args.address is None and (args.gateway or args.dns or args.route):
        raise UsageError("--gateway, --dns and --route need --address (DHCP supplies them)")
    for name, low in (("iface_timeout", 0.0), ("carrier_timeout", 0.1), ("dhcp_timeout", 1.0)):
        if not low <= getattr(args, name) <= 3600:
            raise UsageError(f"--{name.replace('_', '-')} must be {low:g}-3600 seconds")
    cfg = None
    if args.address is not None:
        cfg = static.IPv4Config(
            address=static.parse_interface(args.address),
            gateway=static.parse_address(args.gateway, "gateway") if args.gateway else None,
            routes=tuple(static.parse_route(r) for r in args.route),
            dns=tuple(static.parse_address(d, "DNS server") for d in args.dns))
        static.check(cfg)
    result = bring_up(args.iface, cfg, root=args.root, iface_timeout=args.iface_timeout,
                      carrier_timeout=args.carrier_timeout, dhcp_timeout=args.dhcp_timeout)
    c = result.config
    how = "static" if cfg is not None else f"DHCP, lease {c.lease_s} s"
    print(f"{result.iface}: {c.address} ({how}), gateway {c.gateway or 'none'}, "
          f"DNS {' '.join(map(str, c.dns)) or 'none'}")
    return 0


def _keep_lease(args: argparse.Namespace) -> int:
    import os

    from appliance.net import dhcp, keeper

    if args.rounds is not None and args.rounds < 1:
        raise UsageError("--rounds must be at least 1")
    cfg = dhcp.obtain(args.iface, args.dhcp_timeout)
    print(f"{args.iface}: lease of {cfg.address} for {cfg.lease_s} s", flush=True)
    pid, line = keeper.start(args.iface, cfg, run_dir=args.run_dir, rounds=args.rounds)
    print(line, flush=True)
    if args.detach:
        return 0
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _status(args: argparse.Namespace) -> int:
    from appliance.net.status import collect, render

    status = collect(args.root, args.iface)
    if args.iface and not status.interfaces:
        raise UsageError(f"no network interface {args.iface!r}")
    print(render(status))
    return 0
