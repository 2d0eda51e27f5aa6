"""``appliance boot``: the initramfs's PID 1 -- bring the board up and switch to the NBD root.

Never run on a host.  The image's /init (kernel command line ``appliance.init=boot``)
runs the same code without this command line's parser, as ``python3 -m appliance.boot``
(:mod:`appliance.boot.pid1`): on success it execs ``switch_root``; on failure it says
why on the console and opens a rescue shell.
"""

from __future__ import annotations

import argparse
from typing import Any

HELP = """\
Boot the board from its NBD root (run as PID 1 by the initramfs's /init): load the
stored settings (press a key during the countdown for the setup prompt), detect the
board and its PHY, bring up the network, wait for the server over TLS-PSK, attach
/dev/nbd0 (the kernel's TLS with a supervisor, or the relay: nbd.path), mount it and
switch_root into it.  Kernel command line:
nbdroot.config=PATH (config store; default /etc/nbdroot), nbdroot.device=/dev/nbdN,
init=PATH (default /sbin/init).
"""


def register(sub: Any) -> None:
    p = sub.add_parser("boot", help="PID 1 of the initramfs: boot from the NBD root",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--no-switch", action="store_true",
                   help="stop after mounting the root on /newroot (for debugging)")
    p.set_defaults(func=cmd_boot)


def cmd_boot(args: argparse.Namespace) -> int:
    from appliance.boot.pid1 import main

    return main(no_switch=args.no_switch)
