"""``appliance boot``: the initramfs's PID 1 -- bring the board up and switch to the NBD root.

Run by the image's /init (kernel command line ``appliance.init=boot``), never on a host.
On success it execs ``switch_root``; on failure it says why on the console and opens a
rescue shell (PID 1 must not exit: the kernel would panic).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

HELP = """\
Boot the board from its NBD root (run as PID 1 by the initramfs's /init): load the
stored settings (press a key during the countdown for the setup prompt), detect the
board and its PHY, bring up the network, wait for the server over TLS-PSK, attach
/dev/nbd0 through the relay, mount it and switch_root into it.  Kernel command line:
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
    from appliance.boot.sequence import NEWROOT, BootOptions, run
    from appliance.errors import ApplianceError

    with open("/proc/cmdline", encoding="ascii", errors="replace") as f:
        opts = BootOptions.from_cmdline(f.read())
    try:
        init = run(opts)
    except ApplianceError as exc:
        print(f"nbdroot: boot failed: {exc}", flush=True)
        return _rescue()
    if args.no_switch:
        return 0
    print(f"nbdroot: switching to the root on {opts.device} ({init})", flush=True)
    try:
        os.execvp("switch_root", ["switch_root", NEWROOT, init])
    except OSError as exc:
        print(f"nbdroot: boot failed: cannot run switch_root: {exc}", flush=True)
    return _rescue()


def _rescue() -> int:
    if os.getpid() != 1:
        return 1
    print("nbdroot: rescue shell (fix the cause, then 'reboot -f')", flush=True)
    os.execvp("sh", ["sh"])
