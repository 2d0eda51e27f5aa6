"""``/dev/nbdN`` devices: which exist, which are free, loading the nbd module.

A device is *in use* when the kernel has a receive task for it
(``/sys/block/nbdN/pid`` exists) or a non-zero size; otherwise it is free.  The
sysfs and /dev roots are parameters so the parsing can be tested on a directory
tree the test makes (a fake sysfs, named as such in the tests).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import KernelError
from appliance.modprobe import modprobe

log = logging.getLogger(__name__)

SYS_BLOCK = Path("/sys/block")
DEV = Path("/dev")
_NAME = re.compile(r"^nbd(\d+)$")
MODPROBE_TIMEOUT = 30.0


@dataclass(frozen=True)
class DeviceState:
    """What sysfs says about one nbd device."""

    index: int
    pid: int | None
    size_bytes: int

    @property
    def name(self) -> str:
        return f"nbd{self.index}"

    @property
    def path(self) -> str:
        return f"/dev/nbd{self.index}"

    @property
    def in_use(self) -> bool:
        return self.pid is not None or self.size_bytes > 0


def parse_device(device: str) -> int:
    """The index N of ``/dev/nbdN``, ``nbdN`` or ``N``; UsageError-like KernelError otherwise."""
    name = os.path.basename(device.strip())
    if name.isdigit():
        return int(name)
    match = _NAME.match(name)
    if not match:
        raise KernelError(f"{device!r} is not an nbd device (expected /dev/nbdN)")
    return int(match.group(1))


def read_state(index: int, sys_block: Path = SYS_BLOCK) -> DeviceState | None:
    """The state of nbd<index>, or None when the kernel has no such device."""
    base = sys_block / f"nbd{index}"
    if not base.is_dir():
        return None
    pid: int | None = None
    try:
        pid = int((base / "pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        pid = None
    except OSError:  # the pid attribute errors out when no task is attached
        pid = None
    try:
        sectors = int((base / "size").read_text().strip())
    except (OSError, ValueError):
        sectors = 0
    return DeviceState(index=index, pid=pid, size_bytes=sectors * 512)


def list_devices(sys_block: Path = SYS_BLOCK) -> list[DeviceState]:
    """Every nbd device the kernel has, by index."""
    if not sys_block.is_dir():
        return []
    indexes = sorted(
        int(m.group(1)) for entry in sys_block.iterdir() if (m := _NAME.match(entry.name))
    )
    return [s for i in indexes if (s := read_state(i, sys_block)) is not None]


def first_free(sys_block: Path = SYS_BLOCK) -> DeviceState | None:
    """The free device with the lowest index, or None."""
    for state in list_devices(sys_block):
        if not state.in_use:
            return state
    return None


def have_driver(sys_block: Path = SYS_BLOCK) -> bool:
    """Whether the nbd driver is loaded (built in or as a module)."""
    return Path("/sys/module/nbd").is_dir() or bool(list_devices(sys_block))


def ensure_driver(sys_block: Path = SYS_BLOCK) -> None:
    """Load the nbd module if the driver is not there yet; KernelError if that fails."""
    if have_driver(sys_block):
        return
    log.info("loading the nbd kernel module")
    why = modprobe("nbd", timeout=MODPROBE_TIMEOUT)
    if why is not None or not have_driver(sys_block):
        detail = why or "no nbd devices appeared"
        raise KernelError(
            f"the kernel has no nbd driver and 'modprobe nbd' failed ({detail}); "
            "build the kernel with CONFIG_BLK_DEV_NBD or install its modules")
