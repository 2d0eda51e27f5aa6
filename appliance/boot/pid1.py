"""PID 1 of the initramfs: run the boot sequence, then exec ``switch_root`` or a rescue shell.

PID 1 must not exit (the kernel would panic), so every failure, an unexpected one too,
ends in a shell on the console with the reason printed above it.
"""

from __future__ import annotations

import logging
import os

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"


def main(*, no_switch: bool = False) -> int:
    """Boot from the NBD root; returns only when not PID 1 (``--no-switch``, a failure)."""
    from appliance.boot.sequence import NEWROOT, BootOptions, run
    from appliance.errors import ApplianceError

    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    with open("/proc/cmdline", encoding="ascii", errors="replace") as f:
        opts = BootOptions.from_cmdline(f.read())
    try:
        init = run(opts)
    except ApplianceError as exc:
        print(f"nbdroot: boot failed: {exc}", flush=True)
        return rescue()
    except Exception as exc:  # a bug: PID 1 still must not exit
        print(f"nbdroot: boot failed: internal error: {type(exc).__name__}: {exc}",
              flush=True)
        return rescue()
    if no_switch:
        return 0
    print(f"nbdroot: switching to the root on {opts.device} ({init})", flush=True)
    try:
        os.execvp("switch_root", ["switch_root", NEWROOT, init])
    except OSError as exc:
        print(f"nbdroot: boot failed: cannot run switch_root: {exc}", flush=True)
    return rescue()


def rescue() -> int:
    """As PID 1: a shell on the console (never returns); otherwise exit status 1."""
    if os.getpid() != 1:
        return 1
    print("nbdroot: rescue shell (fix the cause, then 'reboot -f')", flush=True)
    os.execvp("sh", ["sh"])
