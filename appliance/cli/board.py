"""``appliance board``: detect the board, load its modules, scan and set the PHY address."""

from __future__ import annotations

import argparse
from pathlib import Path

from appliance.errors import UsageError

HELP = "board bring-up: detect the board, load modules, find or set the Ethernet PHY"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``board`` and its subcommands."""
    p = subparsers.add_parser("board", help=HELP, description=HELP + ".")
    sub = p.add_subparsers(dest="board_command", metavar="SUBCOMMAND", required=True)

    d = sub.add_parser("detect", help="show the board profile matching the devicetree",
                       description="Read /proc/device-tree/compatible and show the matching "
                       "board profile: console, kernel modules and Ethernet ports.")
    _root(d)
    d.set_defaults(func=_detect)

    m = sub.add_parser("modules", help="load the kernel modules the FEC needs, in order",
                       description="Run modprobe for the board's modules in order (prerequisites,"
                       " PHY drivers, fec); modules already loaded or built in are skipped.")
    _root(m)
    m.add_argument("--dry-run", action="store_true", help="only show what modprobe would insert")
    m.add_argument("--moddir", type=Path, help="modprobe -d: base directory of lib/modules")
    m.add_argument("--kernel", help="modprobe -S: kernel release (default: the running one)")
    m.set_defaults(func=_modules)

    u = sub.add_parser("up", help="detect, load modules and check the PHY in one step",
                       description="What the boot path does before the network: detect the "
                       "board, modprobe its modules in order, then apply the PHY policy to what "
                       "answers on the MDIO bus.")
    _root(u)
    u.add_argument("--iface", help="the board's Ethernet port (default: its first)")
    u.add_argument("--phy", metavar="N|auto", help="MDIO address 0-31 or 'auto' "
                   "(default: the profile's)")
    u.add_argument("--dry-run", action="store_true", help="modprobe -n: load nothing")
    u.add_argument("--moddir", type=Path, help="modprobe -d: base directory of lib/modules")
    u.add_argument("--kernel", help="modprobe -S: kernel release (default: the running one)")
    u.add_argument("--phy-timeout", type=float, default=5.0, metavar="S",
                   help="seconds to wait for a PHY to appear (default: 5)")
    u.set_defaults(func=_up)

    phy = sub.add_parser("phy", help="scan the MDIO bus or set the PHY address in a DTB",
                         description="PHY selection: what answers on the MDIO bus (sysfs), and "
                         "patching a devicetree blob for a given MDIO address.")
    psub = phy.add_subparsers(dest="phy_command", metavar="SUBCOMMAND", required=True)
    s = psub.add_parser("scan", help="list PHYs on the MDIO buses and check the configured one",
                        description="List every PHY under /sys/bus/mdio_bus/devices (address, "
                        "phy_id, driver, interface) and apply the policy for the port: the "
                        "configured address must answer, 'auto' follows what answers.")
    _root(s)
    s.add_argument("--iface", help="the board's Ethernet port (default: its first)")
    s.add_argument("--phy", metavar="N|auto",
                   help="configured MDIO address 0-31 or 'auto' (default: the profile's)")
    s.set_defaults(func=_scan)

    t = psub.add_parser("set", help="set the PHY's MDIO address in a DTB",
                        description="Patch the FEC's ethernet-phy node in a DTB: reg = <N>, node "
                        "name ethernet-phy@N, and the FEC's phy-handle pointing at it. The FEC "
                        "is taken from the board profile matching the DTB's own compatible.",
                        epilog="example: appliance board phy set 6 --dtb imx6q-sabrelite.dtb "
                        "--dry-run")
    t.add_argument("address", metavar="N", help="MDIO address, 0-31")
    t.add_argument("--dtb", type=Path, help="the devicetree blob to patch (required)")
    t.add_argument("-o", "--output", type=Path,
                   help="write the result here (default: replace --dtb atomically)")
    t.add_argument("--dry-run", action="store_true",
                   help="write nothing; show the change as a diff of the DTS")
    t.add_argument("--iface", help="which port of the profile (default: the first)")
    t.add_argument("--fec", help="the FEC's devicetree path (default: from the profile)")
    t.set_defaults(func=_set)


def _root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", type=Path, default=Path("/"),
                   help="read sysfs/procfs/devicetree under this directory (default: /)")


def _detect(args: argparse.Namespace) -> int:
    from board.profile import detect, read_compatible

    profile = detect(args.root)
    print(f"board:      {profile.name}  (profile {profile.key})")
    print(f"compatible: {', '.join(read_compatible(args.root))}")
    print(f"console:    {profile.console}")
    print(f"modules:    {' '.join(profile.load_order)}")
    for eth in profile.ethernet:
        fec = eth.fec or "(alias ethernet0)"
        print(f"ethernet:   {eth.iface}: FEC {fec}, PHY at {eth.phy} on "
              f"{eth.mdio_owner or 'its own bus'}")
    return 0


def _modules(args: argparse.Namespace) -> int:
    from board.modules import ModuleLoader
    from board.profile import detect

    profile = detect(args.root)
    loader = ModuleLoader(root=args.root, moddir=args.moddir, kernel=args.kernel,
                          dry_run=args.dry_run)
    for done in loader.load(profile.load_order):
        print(f"{done.name}: {done.action}")
        if done.detail and args.dry_run:
            print("  " + done.detail.replace("\n", "\n  "))
    return 0


def _up(args: argparse.Namespace) -> int:
    from board.bringup import bring_up
    from board.modules import ModuleLoader
    from board.profile import parse_phy

    if not 0 <= args.phy_timeout <= 600:
        raise UsageError("--phy-timeout must be 0-600 seconds")
    loader = ModuleLoader(root=args.root, moddir=args.moddir, kernel=args.kernel,
                          dry_run=args.dry_run)
    phy = parse_phy(args.phy, "phy") if args.phy is not None else None
    done = bring_up(args.root, iface=args.iface, phy=phy, loader=loader,
                    phy_timeout=args.phy_timeout)
    print(f"board: {done.profile.name}")
    print("modules: " + ", ".join(f"{m.name} ({m.action})" for m in done.modules))
    print(f"{done.port.iface}: PHY {done.selection.phy.describe()}")
    for other in done.selection.others:
        print(f"  also on the bus: {other.describe()}")
    return 0


def _scan(args: argparse.Namespace) -> int:
    from board.mdio import scan
    from board.phy import choose
    from board.profile import detect, parse_phy

    profile = detect(args.root)
    port = profile.port(args.iface)
    configured = parse_phy(args.phy, "phy") if args.phy is not None else port.phy
    phys = scan(args.root)
    for phy in phys:
        print(phy.describe())
    if not phys:
        print("no PHYs under /sys/bus/mdio_bus/devices")
    sel = choose(phys, port.mdio_owner, configured)
    print(f"{port.iface}: using PHY at MDIO address {sel.phy.address} on {sel.phy.bus} "
          f"(configured: {configured})")
    return 0


def _set(args: argparse.Namespace) -> int:
    from appliance.errors import BoardError
    from board.profile import parse_phy

    try:
        address = parse_phy(args.address, "phy")
    except BoardError as exc:
        raise UsageError(str(exc)) from None
    if address == "auto":
        raise UsageError("phy set needs a number 0-31; 'auto' is for the running board")
    if args.dtb is None:
        raise UsageError("phy set: --dtb FILE is required")
    try:
        blob = args.dtb.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.dtb}: {exc.strerror}") from None
    fec, index = _fec_for(blob, args.fec, args.iface)

    from board.dtb import dts_diff, set_phy_address

    patch = set_phy_address(blob, address, fec, index)
    if args.dry_run:
        diff = dts_diff(blob, patch.dtb, args.dtb.name)
        print(diff or f"{patch.phy_before} is already at address {address}; nothing to change")
        return 0
    out = args.output or args.dtb
    _write_atomic(out, patch.dtb)
    for line in patch.changes or [f"{patch.phy_after}: already at address {address}"]:
        print(line)
    print(f"wrote {out}")
    return 0


def _fec_for(blob: bytes, fec: str | None, iface: str | None) -> tuple[str, int]:
    """The FEC path (or "" for an alias) and the port index, from the DTB's own profile."""
    from board.dtb import root_compatible
    from board.profile import load_profiles, match_profile

    if fec:
        return fec, 0
    profile = match_profile(root_compatible(blob), load_profiles())
    port = profile.port(iface)
    return port.fec, profile.ethernet.index(port)


def _write_atomic(path: Path, data: bytes) -> None:
    import os

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
