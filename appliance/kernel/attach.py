"""Attach a connected socket to a ``/dev/nbdN`` and let go of it again.

:func:`attach` prefers the netlink family and falls back to the ioctls when the
kernel has no such family.  The transmission flags given to the kernel are the
negotiated export's, masked to what the kernel driver and the relay both handle:
the kernel speaks to the relay, never to the server, so it must not be told of
features only the server has (CAN_MULTI_CONN: there is one socket; DF, CACHE,
FAST_ZERO, RESIZE, BLOCK_STAT_PAYLOAD: the kernel never sends them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from appliance.errors import KernelError
from appliance.kernel import devices, limits
from appliance.kernel.ioctl import IoctlAttachment, ioctl_disconnect
from appliance.kernel.netlink import ConnectRequest, FamilyMissing, NBDNetlink
from appliance.nbd.proto import TransmissionFlag as TF

log = logging.getLogger(__name__)

KERNEL_FLAGS = (TF.NBD_FLAG_HAS_FLAGS | TF.NBD_FLAG_READ_ONLY | TF.NBD_FLAG_SEND_FLUSH
                | TF.NBD_FLAG_SEND_FUA | TF.NBD_FLAG_ROTATIONAL | TF.NBD_FLAG_SEND_TRIM
                | TF.NBD_FLAG_SEND_WRITE_ZEROES)

MIN_BLOCK = 512
MAX_BLOCK = 4096  # the kernel's limit is PAGE_SIZE; 4 KiB on armhf


@dataclass(frozen=True)
class KernelExport:
    """The negotiated export, as the kernel is to see it."""

    size: int
    flags: int
    block_size: int = MIN_BLOCK
    max_request: int | None = None  # the export's maximum block size: kernel requests stay within

    def kernel_flags(self) -> int:
        return int(self.flags) & int(KERNEL_FLAGS) | int(TF.NBD_FLAG_HAS_FLAGS)


@dataclass
class Attachment:
    """A device the kernel now serves from our socket."""

    index: int
    method: str  # "netlink" or "ioctl"
    ioctl: IoctlAttachment | None = None

    @property
    def path(self) -> str:
        return f"/dev/nbd{self.index}"


def block_size_for(preferred: int | None, minimum: int | None = None) -> int:
    """A block size the kernel accepts: a power of two in [512, 4096], at least ``minimum``."""
    size = max(preferred or MIN_BLOCK, minimum or MIN_BLOCK, MIN_BLOCK)
    size = min(size, MAX_BLOCK)
    power = MIN_BLOCK
    while power * 2 <= size:
        power *= 2
    return power


def attach(sock_fd: int, export: KernelExport, *, device: str | None = None,
           timeout: int | None = 0, dead_conn_timeout: int | None = None,
           method: str = "auto") -> Attachment:
    """Give ``sock_fd`` to the kernel as the socket of a free (or the named) nbd device.

    ``timeout`` 0 asks the kernel never to fail a request for slowness: the relay
    on the other end does its own reconnecting and decides when to give up.
    ``method``: "auto" (netlink, else ioctl), "netlink" or "ioctl".
    """
    if method not in ("auto", "netlink", "ioctl"):
        raise KernelError(f"unknown attach method {method!r}")
    if export.block_size & (export.block_size - 1) or not (
            MIN_BLOCK <= export.block_size <= MAX_BLOCK):
        raise KernelError(f"block size {export.block_size} is not a power of two in "
                          f"[{MIN_BLOCK}, {MAX_BLOCK}]")
    devices.ensure_driver()
    index = devices.parse_device(device) if device else None
    if index is not None:
        state = devices.read_state(index)
        if state is not None and state.in_use:
            raise KernelError(f"{state.path} is already in use (pid {state.pid}); "
                              "detach it first or pick another device")
    if method != "ioctl":
        try:
            with NBDNetlink() as nl:
                got = nl.connect(ConnectRequest(
                    fds=(sock_fd,), size_bytes=export.size, block_size=export.block_size,
                    server_flags=export.kernel_flags(), index=index, timeout=timeout,
                    dead_conn_timeout=dead_conn_timeout))
            log.info("attached /dev/nbd%d through netlink (%d bytes)", got, export.size)
            _limit(got, export)
            return Attachment(index=got, method="netlink")
        except FamilyMissing:
            if method == "netlink":
                raise
            log.info("no nbd netlink family; using the ioctl interface")
    if index is None:
        free = devices.first_free()
        if free is None:
            raise KernelError("no free /dev/nbdN device (load nbd with a larger nbds_max)")
        index = free.index
    att = IoctlAttachment(index)
    att.configure(sock_fd, export.size, export.block_size, export.kernel_flags(), timeout)
    _limit(index, export)  # before NBD_DO_IT: no request is queued yet
    att.start()
    log.info("attached %s through ioctls (%d bytes)", att.path, export.size)
    return Attachment(index=index, method="ioctl", ioctl=att)


def _limit(index: int, export: KernelExport) -> None:
    if export.max_request is not None:
        limits.apply_max_request(index, export.max_request)


def detach(device: str) -> None:
    """Disconnect ``/dev/nbdN``: the kernel sends NBD_CMD_DISC and drops the socket."""
    index = devices.parse_device(device)
    state = devices.read_state(index)
    if state is None:
        raise KernelError(f"/dev/nbd{index} does not exist (is the nbd driver loaded?)")
    try:
        with NBDNetlink() as nl:
            nl.disconnect(index)
        return
    except FamilyMissing:
        pass
    ioctl_disconnect(index)


def status() -> list[devices.DeviceState]:
    """Every nbd device with its sysfs state; KernelError if there is no driver."""
    if not devices.have_driver():
        raise KernelError("the kernel has no nbd driver loaded (no /sys/block/nbd*); "
                          "try 'modprobe nbd'")
    return devices.list_devices()
