"""Subcommands of the ``appliance`` command that only exist on the host.

Each module exposes ``register(subparsers)`` as the board's commands in
:mod:`appliance.cli` do.  The board's initramfs has no :mod:`appliance.host`, so there
the ``appliance`` command simply lacks these subcommands.
"""

from pathlib import Path

COMMANDS: tuple[str, ...] = ("console", "image", "demo", "bench", "fleet", "serve")


def absolute_path(text: str) -> Path:
    """An argparse ``type``: the path made absolute once, at the command line's edge.

    Servers and QEMU get absolute paths only (qemu-nbd resolves a relative
    ``tls-creds-psk dir=`` elsewhere than our working directory).
    """
    return Path(text).absolute()
