"""Request-size limits of an attached ``/dev/nbdN``, so the kernel never sends the relay a
request larger than the export's maximum block size (which the server would refuse).

Owns the two queue limits sysfs lets us lower after NBD_CMD_CONNECT: ``max_sectors_kb``
(reads and writes; at most ``max_hw_sectors_kb``, at least one page) and
``discard_max_bytes`` (trims; only where the device discards at all).  The netlink family
has no attribute for either, so they are written to ``/sys/block/nbdN/queue``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from appliance.errors import KernelError
from appliance.kernel.devices import SYS_BLOCK

log = logging.getLogger(__name__)

PAGE_KB = 4  # max_sectors_kb cannot go below one page (4 KiB on armhf and x86)


def apply_max_request(index: int, max_bytes: int, sys_block: Path = SYS_BLOCK) -> None:
    """Keep the kernel's reads, writes and trims on nbd``index`` within ``max_bytes``."""
    queue = sys_block / f"nbd{index}" / "queue"
    want_kb = max_bytes // 1024
    if want_kb < PAGE_KB:
        raise KernelError(f"the export's maximum block size {max_bytes} is below a page; "
                          "the kernel cannot keep its requests that small")
    hw_kb = _read(queue / "max_hw_sectors_kb")
    if want_kb < _read(queue / "max_sectors_kb"):
        _write(queue / "max_sectors_kb", min(want_kb, hw_kb))
    if _read(queue / "discard_max_hw_bytes") > 0 and _read(queue / "discard_max_bytes") > max_bytes:
        _write(queue / "discard_max_bytes", max_bytes)
    log.info("nbd%d: requests limited to %d bytes (the export's maximum)", index, max_bytes)


def _read(path: Path) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError) as exc:
        raise KernelError(f"cannot read {path}: {exc}") from None


def _write(path: Path, value: int) -> None:
    try:
        path.write_text(f"{value}\n")
    except OSError as exc:
        raise KernelError(f"cannot set {path} to {value}: {exc.strerror or exc}") from None
