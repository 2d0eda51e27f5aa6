"""Subcommands of the ``appliance`` command that only exist on the host.

Each module exposes ``register(subparsers)`` as the board's commands in
:mod:`appliance.cli` do.  The board's initramfs has no :mod:`appliance.host`, so there
the ``appliance`` command simply lacks these subcommands.
"""

COMMANDS: tuple[str, ...] = ("console", "image", "demo", "bench", "fleet", "serve")
