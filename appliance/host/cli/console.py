"""``appliance console PORT``: talk to a board's serial console, by hand or by script."""

from __future__ import annotations

import argparse
from typing import Any

HELP = """\
Without actions: an interactive terminal on PORT (Ctrl-] quits).
With actions (--set, --unset, --psk-file, --show, --test, --save, --boot): interrupt
the board's boot countdown, run the commands at its nbdroot> prompt in that order
(sets, unsets, psk file, show, test, save, boot) and stop with a non-zero exit and
the board's message at the first one it refuses.

PORT is a serial device (/dev/ttyUSB0), a pty path, or socket://127.0.0.1:PORT for
QEMU started with -serial tcp:127.0.0.1:PORT,server,nowait.

example (a fleet, one board per adapter):
  appliance console /dev/ttyUSB0 --set nbd.uri=nbds://board7@10.0.0.1/root7 \\
      --psk-file board7.psk --save --boot
"""


def register(subparsers: Any) -> None:
    """Add the ``console`` subcommand."""
    p = subparsers.add_parser(
        "console", help="open or script a board's serial console",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("port", metavar="PORT", help="serial device, pty path or socket://HOST:PORT")
    p.add_argument("--baud", type=int, default=115200, help="line speed (default 115200)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a key (repeatable)")
    p.add_argument("--unset", dest="unsets", action="append", default=[], metavar="KEY",
                   help="put a key back to its default (repeatable)")
    p.add_argument("--psk-file", metavar="FILE",
                   help="set psk.identity and psk.key from an identity:hexkey file "
                        "(keeps the key off the command line)")
    p.add_argument("--show", action="store_true", help="print the board's settings")
    p.add_argument("--test", action="store_true", help="have the board try the NBD server")
    p.add_argument("--save", action="store_true", help="store the settings on the board")
    p.add_argument("--boot", action="store_true", help="let the board boot afterwards")
    p.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for each answer (default 30)")
    p.add_argument("--wait", type=float, default=120.0,
                   help="seconds to wait for the board's prompt (default 120)")
    p.set_defaults(func=handler)


def build_commands(args: argparse.Namespace) -> list[str]:
    """The prompt commands the options ask for, in their fixed order."""
    from pathlib import Path

    from appliance.errors import UsageError

    commands = []
    for item in args.sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(f"--set needs KEY=VALUE, got '{item}'")
        commands.append(f"set {key.strip()} {value.strip()}")
    commands += [f"unset {key}" for key in args.unsets]
    if args.psk_file:
        from appliance.config.psk import read_psk_file

        identity, key = read_psk_file(Path(args.psk_file))
        commands += [f"set psk.identity {identity}", f"set psk.key {key.hex()}"]
    for flag in ("show", "test", "save", "boot"):
        if getattr(args, flag):
            commands.append(flag)
    return commands


def handler(args: argparse.Namespace) -> int:
    """Run the interactive terminal or the scripted dialogue."""
    from appliance.host import console as host

    commands = build_commands(args)
    if not commands:
        host.passthrough(args.port, args.baud)
        return 0
    try:
        results = host.run_script(args.port, commands, baudrate=args.baud,
                                  timeout=args.timeout, boot_timeout=args.wait)
    except host.BoardRefused as exc:
        for line in exc.output:
            print(line)
        raise
    for command, output in results:
        print(f"nbdroot> {command}")
        for line in output:
            print(line)
    return 0
