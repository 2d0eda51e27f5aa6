"""``appliance serve``: run the servers of every board of a fleet in the foreground."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from appliance.errors import UsageError

HELP = """\
Start one qemu-nbd per board of the fleet (TLS-PSK; each server knows only its board's
identity, so a board's key opens no other board's export).  Board slot N listens on
PORT+N.  One line per board connection or refused handshake.  Ends its servers by PID
on exit, Ctrl-C, SIGTERM and SIGHUP.
"""


def parse_listen(text: str) -> tuple[str, int | None]:
    """``ADDR``, ``ADDR:PORT`` or ``[V6]:PORT``."""
    host, port = text, None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else None
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        number = int(port) if port else None
    except ValueError:
        raise UsageError(f"--listen: bad port in '{text}'") from None
    if number is not None and not 1 <= number <= 65535:
        raise UsageError(f"--listen: port {number} out of range")
    if not host:
        raise UsageError(f"--listen: no address in '{text}'")
    return host, number


def register(sub: Any) -> None:
    """Add ``appliance serve``."""
    p = sub.add_parser("serve", help="serve every board of a fleet (qemu-nbd, TLS-PSK)",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fleet", type=Path, default=Path("fleet"), metavar="DIR",
                   help="the fleet directory (default: ./fleet)")
    p.add_argument("--listen", default=None, metavar="ADDR[:PORT]",
                   help="address and first port (default: the fleet's, 127.0.0.1:10809)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    """Handler of ``appliance serve``."""
    from appliance.host.fleet.serve import serve
    from appliance.host.fleet.state import Fleet, Listen

    fleet = Fleet(args.fleet)
    listen = None
    if args.listen is not None:
        host, port = parse_listen(args.listen)
        listen = Listen(host, port if port is not None else fleet.listen.port)

    def report(line: str) -> None:
        print(f"serve: {line}", file=sys.stderr, flush=True)

    return serve(fleet, listen, report)
