"""``appliance fleet`` and ``appliance golden``: a fleet's boards and golden images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

FLEET_HELP = """\
Boards of a fleet served by 'appliance serve'.  Each board gets its own PSK identity
(its name) and key (0600), and an export: with --root-mode cow (default) a qcow2
overlay on a golden version, with --root-mode overlay the golden version read-only.
"""

GOLDEN_HELP = """\
Golden images: each import is a new immutable version (sparse raw, 0444).  A version
in use is never modified or deleted; boards move only through fleet add/reset --golden V.
"""


def _fleet_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fleet", type=Path, default=Path("fleet"), metavar="DIR",
                   help="the fleet directory (default: ./fleet)")


def register(sub: Any) -> None:
    """Add ``appliance fleet`` and ``appliance golden``."""
    p = sub.add_parser("fleet", help="boards of a fleet: keys, exports, provisioning",
                       description=FLEET_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    fs = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    add = fs.add_parser("add", help="a new board: key, export, provisioning command")
    add.add_argument("name")
    add.add_argument("--golden", type=int, metavar="VERSION", help="default: the newest")
    add.add_argument("--root-mode", choices=("cow", "overlay"), default="cow",
                     help="cow: a qcow2 overlay per board (default); overlay: shared "
                     "read-only golden export")
    add.add_argument("--console", default="PORT", metavar="PORT",
                     help="the board's serial port in the printed line")
    show = fs.add_parser("show", help="a board's record, or its URI (--uri)")
    show.add_argument("name")
    show.add_argument("--uri", action="store_true",
                      help="only the URI for host-side tools (with ?tls-psk-file=)")
    show.add_argument("--replicas", action="store_true",
                      help="with --uri: one line per server, this one then each replica "
                      "(overlay boards)")
    fs.add_parser("list", help="every board: export, golden version, last connection")
    reset = fs.add_parser("reset", help="start a board again from its golden version")
    reset.add_argument("name")
    reset.add_argument("--golden", type=int, metavar="VERSION",
                       help="move the board to this version")
    remove = fs.add_parser("remove", help="delete a board, its key and its overlay")
    remove.add_argument("name")
    lst = fs.add_parser("listen", help="where the servers listen (and boards reach them)")
    lst.add_argument("address", metavar="ADDR[:PORT]",
                     help="default 127.0.0.1:10809; board N is served on PORT+N")
    rep = fs.add_parser("replicas", help="other hosts serving a copy of this fleet",
                        description="Hosts running 'appliance serve' on a copy of this fleet "
                        "directory (same golden versions and keys).  Overlay boards get their "
                        "URIs too: the printed provisioning line sets nbd.uri to every "
                        "server's URI, space-separated, and the board's relay fails over "
                        "between them.  No address: show them.")
    rep.add_argument("address", nargs="*", metavar="ADDR[:PORT]",
                     help="a replica's listen address (port: default this fleet's)")
    rep.add_argument("--none", action="store_true", help="forget every replica")
    for q in (add, show, fs.choices["list"], reset, remove, lst, rep):
        _fleet_arg(q)
    p.set_defaults(func=cmd_fleet)

    g = sub.add_parser("golden", help="immutable golden image versions",
                       description=GOLDEN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    gs = g.add_subparsers(dest="golden_command", metavar="ACTION", required=True)
    imp = gs.add_parser("import", help="add IMAGE as a new version")
    imp.add_argument("image", type=Path)
    gs.add_parser("list", help="versions, sizes, boards using them")
    ver = gs.add_parser("verify", help="re-hash a version against its import record")
    ver.add_argument("version", type=int)
    rm = gs.add_parser("remove", help="delete a version no board uses")
    rm.add_argument("version", type=int)
    for q in (imp, gs.choices["list"], ver, rm):
        _fleet_arg(q)
    g.set_defaults(func=cmd_golden)


def cmd_fleet(args: argparse.Namespace) -> int:
    """Handler of ``appliance fleet``."""
    from appliance.host.fleet import boards
    from appliance.host.fleet.state import Fleet

    fleet = Fleet(args.fleet)
    action = args.fleet_command
    if action == "add":
        b = boards.add(fleet, args.name, golden_version=args.golden, mode=args.root_mode)
        print(f"board {b.name}: key {fleet.psk_file(b.name)}, export '{b.name}' on port "
              f"{fleet.port(b)} ({b.mode}, golden {b.golden}); provision it with:")
        print(boards.provisioning_line(fleet, b, console=args.console))
        if b.mode == "cow" and fleet.replicas:
            print(f"(a cow board's writes live on this server only: the replicas serve "
                  f"overlay boards; {b.name} is given no replica)")
    elif action == "show":
        b = fleet.require().board(args.name)
        if args.uri:
            print("\n".join(boards.uris(fleet, b)) if args.replicas else boards.uri(fleet, b))
        else:
            print(f"name {b.name}\nmode {b.mode}\ngolden {b.golden}\nport {fleet.port(b)}")
            print(f"key {fleet.psk_file(b.name)}\nuri {boards.uri(fleet, b)}")
            print(f"provision {boards.provisioning_line(fleet, b)}")
    elif action == "list":
        print(f"{'board':<16} {'mode':<8} {'golden':>6} {'port':>6}  last connection")
        for v in boards.views(fleet):
            print(f"{v.board.name:<16} {v.board.mode:<8} {v.board.golden:>6} {v.port:>6}  "
                  f"{v.last_seen}")
    elif action == "listen":
        from appliance.host.cli.serve import parse_listen
        from appliance.host.fleet.state import Listen

        host, port = parse_listen(args.address)
        fleet.require().set_listen(Listen(host, port if port is not None else fleet.listen.port))
        print(f"servers listen on {fleet.listen.host}:{fleet.listen.port}+N; boards reach "
              f"them at {boards.board_host(fleet)}")
    elif action == "replicas":
        _replicas(fleet, args.address, args.none)
    elif action == "reset":
        b = boards.reset(fleet, args.name, golden_version=args.golden)
        print(f"board {b.name}: starts again from golden {b.golden}")
    else:
        boards.remove(fleet, args.name)
        print(f"board {args.name}: removed")
    return 0


def _replicas(fleet: Any, addresses: list[str], forget: bool) -> None:
    from appliance.errors import UsageError
    from appliance.host.cli.serve import parse_listen
    from appliance.host.fleet.state import Listen

    fleet.require()
    if forget and addresses:
        raise UsageError("fleet replicas: give addresses or --none, not both")
    if forget or addresses:
        found = []
        for text in addresses:
            try:
                host, port = parse_listen(text)
            except UsageError as exc:
                raise UsageError(str(exc).replace("--listen:", "fleet replicas:")) from None
            found.append(Listen(host, port if port is not None else fleet.listen.port))
        if fleet.listen in found:
            raise UsageError("fleet replicas: this fleet's own address is not a replica")
        fleet.set_replicas(found)
    shown = fleet.replicas
    if not shown:
        print("no replicas: overlay boards are served from "
              f"{fleet.listen.host}:{fleet.listen.port}+N only")
    for r in shown:
        host = f"[{r.host}]" if ":" in r.host else r.host
        print(f"replica {host}:{r.port}+N (appliance serve on a copy of {fleet.root})")


def cmd_golden(args: argparse.Namespace) -> int:
    """Handler of ``appliance golden``."""
    from appliance.host.fleet import golden
    from appliance.host.fleet.state import Fleet

    fleet = Fleet(args.fleet)
    action = args.golden_command
    if action == "import":
        v = golden.import_image(fleet, args.image)
        print(f"golden {v.number}: {v.image} ({v.size} bytes, sha256 {v.sha256})")
        return 0
    fleet.require()
    if action == "list":
        print(f"{'version':>7} {'size':>14}  {'sha256':<16}  boards")
        for v in golden.versions(fleet):
            users = ", ".join(golden.in_use(fleet, v.number)) or "-"
            print(f"{v.number:>7} {v.size:>14}  {v.sha256[:16]}  {users}")
    elif action == "verify":
        v = golden.version(fleet, args.version)
        if not golden.verify(v):
            print(f"golden {v.number}: SHA-256 differs from the import record")
            return 1
        print(f"golden {v.number}: unchanged (sha256 {v.sha256})")
    else:
        golden.remove(fleet, args.version)
        print(f"golden {args.version}: removed")
    return 0
