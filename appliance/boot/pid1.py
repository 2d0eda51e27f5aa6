"""PID 1 of the initramfs: run the boot sequence, then exec ``switch_root`` or a rescue shell.

PID 1 must not exit (the kernel would panic), so every failure, an unexpected one too,
ends in a shell on the console with the reason printed above it.
"""

from __future__ import annotations

import logging
import os
import time

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
              "error": logging.ERROR}


class UptimeFormatter(logging.Formatter):
    """``[  12.34s] LEVEL logger: message``: seconds since the kernel started, as the boot
    timeline and the kernel's log count them."""

    def format(self, record: logging.LogRecord) -> str:
        return f"[{time.clock_gettime(time.CLOCK_BOOTTIME):7.2f}s] {super().format(record)}"


def setup_logging(level: str) -> None:
    """The agent's log on stderr (the console) from ``level`` (``appliance.log=``; an
    unknown level: warning, said once)."""
    handler = logging.StreamHandler()
    handler.setFormatter(UptimeFormatter(LOG_FORMAT))
    logging.basicConfig(level=LOG_LEVELS.get(level, logging.WARNING), handlers=[handler])
    if level not in LOG_LEVELS:
        logging.getLogger(__name__).warning(
            "appliance.log=%s: not one of %s; logging warnings", level, ", ".join(LOG_LEVELS))


def main(*, no_switch: bool = False) -> int:
    """Boot from the NBD root; returns only when not PID 1 (``--no-switch``, a failure)."""
    from appliance.boot.sequence import NEWROOT, BootOptions, run
    from appliance.errors import ApplianceError

    with open("/proc/cmdline", encoding="ascii", errors="replace") as f:
        opts = BootOptions.from_cmdline(f.read())
    setup_logging(opts.log_level)
    try:
        init = run(opts)
        _log_costs(NEWROOT + "/proc/stat")  # the root step moved /proc there
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


def _log_costs(stat: str) -> None:
    """Debug: the CPU's time since the kernel started (``stat``: /proc/stat), the stored
    code and the module index."""
    from appliance.boot.lazy_inspect import standing_in
    from appliance.boot.module_index import installed
    from appliance.boot.precompiled import Stats

    log = logging.getLogger(__name__)
    if not log.isEnabledFor(logging.DEBUG):
        return  # nothing read on a boot without appliance.log=debug
    try:
        with open(stat, encoding="ascii") as f:
            ticks = [int(t) / os.sysconf("SC_CLK_TCK") for t in f.readline().split()[1:9]]
        log.debug("CPU since boot: user %.2f s, nice %.2f s, system %.2f s, idle %.2f s, "
                  "iowait %.2f s, irq %.2f s, softirq %.2f s, steal %.2f s", *ticks)
    except (OSError, ValueError):
        pass
    log.debug("dataclass and namedtuple code: %d texts stored, %d ran stored, %d compiled "
              "at boot; patterns: %d stored, %d used stored, %d compiled at boot; "
              "inspect: %s", Stats.stored, Stats.hits, Stats.misses, Stats.patterns_stored,
              Stats.pattern_hits, Stats.pattern_misses,
              "not needed" if standing_in() else "imported")
    index = installed()
    log.debug("module index: %s", f"{len(index.index)} modules, {index.found} found there"
              if index else "none")


def rescue() -> int:
    """As PID 1: a shell on the console (never returns); otherwise exit status 1."""
    if os.getpid() != 1:
        return 1
    print("nbdroot: rescue shell (fix the cause, then 'reboot -f')", flush=True)
    os.execvp("sh", ["sh"])
