"""The board's wall clock at boot: never earlier than the image's build time.

QEMU's i.MX6 boards, like a real board whose RTC battery is flat, start the clock at
1970.  Everything that compares dates then misbehaves: every login on the root said
``account root has password changed in future`` (shadow's last-change day is the build
day), and certificate validity, make and log order go wrong too.  As systemd does with
``/usr/lib/clock-epoch``, the agent moves the clock forward to the image's build time: the
file's mtime, which the image builder sets to SOURCE_DATE_EPOCH like every other file of
the initramfs.  A clock that is already later is left alone; the root keeps the clock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

EPOCH_FILE = Path("/usr/lib/clock-epoch")


def _set_realtime(seconds: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, seconds)


def advance_to_build_time(epoch_file: Path = EPOCH_FILE,
                          set_clock: Callable[[float], None] = _set_realtime) -> float | None:
    """Set the clock to ``epoch_file``'s mtime if it is earlier; the new time, or None."""
    try:
        epoch = epoch_file.stat().st_mtime
    except OSError:
        return None  # not our image: nothing to go by
    if time.time() >= epoch:
        return None
    try:
        set_clock(epoch)
    except OSError as exc:
        log.warning("the clock is before the image's build time and cannot be set: %s", exc)
        return None
    log.info("clock was before the image's build time; set to %s",
             time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch)))
    return epoch
