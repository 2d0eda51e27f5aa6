"""``appliance demo``: build the image and boot the emulated SABRE Lite from a TLS-PSK NBD root."""

from __future__ import annotations

import argparse
import faulthandler
import signal
import sys
from typing import Any

from appliance.host.cli import absolute_path

HELP = """\
Build the boot image (cached in --out), serve a root filesystem (--root: Debian with
systemd by default, or the minimal busybox root) with qemu-nbd over
TLS-PSK on 127.0.0.1 (a fresh key; the guest's writes go to a qcow2 overlay in
OUT/demo), and boot qemu-system-arm -M sabrelite with the board configured to use it.
The console is this terminal (Ctrl-A X ends QEMU).  With --check, boot headless and
exit 0 once the booted root reports it runs from /dev/nbd0 with the relay alive, or 1
naming the boot step that failed.
"""


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="build the image and boot the emulated board from NBD",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=absolute_path, default="out",
                   help="artefact directory (default: ./out)")
    p.add_argument("--check", action="store_true",
                   help="boot headless and report success or the failing step")
    p.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS",
                   help="with --check: how long the boot may take (default 900: the systemd "
                        "root under TCG on a loaded machine)")
    p.add_argument("--countdown", type=int, default=1, metavar="SECONDS",
                   help="the board's 'press a key to configure' countdown (default 1)")
    p.add_argument("--boot", choices=("kernel", "uboot"), default="kernel",
                   help="kernel: QEMU loads the kernel, DTB and initramfs (default); "
                        "uboot: boot sdcard.img through Debian's U-Boot, as a real "
                        "SABRE Lite does (sabrelite only)")
    p.add_argument("--root", choices=("debian", "minimal"), default="debian",
                   help="debian: Debian trixie with systemd, networkd and udev (default); "
                        "minimal: the busybox-init root the fast tests boot")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from appliance.host import children
    from appliance.host.demo import DemoOptions, run

    def report(line: str) -> None:
        print(f"demo: {line}", file=sys.stderr, flush=True)

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: where is it?
    with children.signals_raise():
        return run(DemoOptions(out=args.out, check=args.check, timeout=args.timeout,
                               countdown=args.countdown, boot=args.boot,
                               root=args.root), report)
