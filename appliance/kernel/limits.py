"""Lowering an attached ``/dev/nbdN``'s request-size limits to the export's maximum block size.

Owns :func:`apply_max_request`, which :mod:`appliance.kernel.attach` calls as soon as the
device is set up (netlink: right after NBD_CMD_CONNECT; ioctl: before NBD_DO_IT, so
before any request) when the export says how long a request may be.  It writes two
queue limits in ``/sys/block/nbdN/queue`` (the nbd netlink family has no attribute for
either): ``max_sectors_kb`` for reads and writes (never above ``max_hw_sectors_kb``,
never below one page: a smaller maximum is a KernelError) and ``discard_max_bytes`` for
trims (only where the device discards at all).  Limits are only ever lowered.

This keeps the kernel's READ/WRITE/TRIM requests whole on the wire in the common case;
it is not what makes oversized requests safe: the kernel bounds WRITE_ZEROES by neither
limit, so the relay still cuts any request longer than the server's maximum into pieces
(:mod:`appliance.relay.split`).
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
