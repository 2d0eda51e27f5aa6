"""The ``appliance`` command: argument parsing, subcommand dispatch, error reporting.

Each subcommand lives in its own module under ``appliance.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a handler
``(args) -> int``.  Handlers import what they need lazily so that ``--help`` and the
boot path stay fast on the board.  This is the only place that turns an
:class:`~appliance.errors.ApplianceError` into a one-line message and an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from appliance import __version__
from appliance.errors import ApplianceError

# Modules under appliance.cli (the board's commands), in the order they appear in --help;
# the host's commands (appliance.host.cli) follow where that package exists.
COMMANDS: tuple[str, ...] = ("nbd", "board", "net", "psk", "boot", "status")
HOST_PACKAGE = "appliance.host.cli"

EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="appliance",
        description="Diskless-boot agent for i.MX6 boards: NBD root over TLS-PSK, "
        "board bring-up, image building and the serial console.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v info, -vv debug)")
    parser.add_argument("--debug", action="store_true",
                        help="show a traceback when a command fails")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        importlib.import_module(module).register(sub)
    return parser


def command_modules() -> list[str]:
    """The modules that register subcommands: the board's, then the host's if present."""
    modules = [f"appliance.cli.{name}" for name in COMMANDS]
    if importlib.util.find_spec(HOST_PACKAGE.rsplit(".", 1)[0]) is None:  # on the board
        return modules
    host = importlib.import_module(HOST_PACKAGE)
    return modules + [f"{HOST_PACKAGE}.{name}" for name in host.COMMANDS]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``appliance`` command line; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except ApplianceError as exc:
        if args.debug:
            raise
        print(f"appliance: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("appliance: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: still one line unless --debug
        if args.debug:
            raise
        print(f"appliance: internal error: {type(exc).__name__}: {exc} "
              "(run with --debug for a traceback)", file=sys.stderr)
        return EXIT_INTERNAL
