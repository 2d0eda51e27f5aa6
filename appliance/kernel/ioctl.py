"""The ``/dev/nbdN`` ioctl interface (include/uapi/linux/nbd.h), the fallback path.

Used only when the kernel has no ``nbd`` netlink family.  The sequence is the one
nbd-client uses: SET_BLKSIZE, SET_SIZE_BLOCKS, SET_FLAGS, SET_TIMEOUT, SET_SOCK,
then NBD_DO_IT, which blocks in the kernel for as long as the device is attached
(so it runs in its own thread), then CLEAR_SOCK.  NBD_DISCONNECT from any other
opener makes DO_IT return.

The size is given in blocks (NBD_SET_SIZE_BLOCKS), not bytes: ``fcntl.ioctl``
passes its integer argument as a C int, and an armhf ``unsigned long`` is 32 bits,
so NBD_SET_SIZE would overflow past 2 GiB.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading

from appliance.errors import KernelError

log = logging.getLogger(__name__)


def _io(nr: int) -> int:
    """_IO(0xab, nr): no direction, no size."""
    return (0xAB << 8) | nr


NBD_SET_SOCK = _io(0)
NBD_SET_BLKSIZE = _io(1)
NBD_SET_SIZE = _io(2)
NBD_DO_IT = _io(3)
NBD_CLEAR_SOCK = _io(4)
NBD_CLEAR_QUE = _io(5)
NBD_PRINT_DEBUG = _io(6)
NBD_SET_SIZE_BLOCKS = _io(7)
NBD_DISCONNECT = _io(8)
NBD_SET_TIMEOUT = _io(9)
NBD_SET_FLAGS = _io(10)

_INT_MAX = 2**31 - 1


def _ioctl(fd: int, request: int, arg: int, what: str) -> None:
    try:
        fcntl.ioctl(fd, request, arg)
    except OSError as exc:
        raise KernelError(f"{what} failed: {exc.strerror} (errno {exc.errno})") from exc


class IoctlAttachment:
    """One device attached through ioctls; :meth:`start` runs NBD_DO_IT in a thread."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.path = f"/dev/nbd{index}"
        self._fd = -1
        self._thread: threading.Thread | None = None
        self.error: KernelError | None = None

    def configure(self, sock_fd: int, size_bytes: int, block_size: int,
                  flags: int, timeout: int | None) -> None:
        """Open the device and hand it geometry, flags and the socket."""
        blocks = size_bytes // block_size
        if blocks > _INT_MAX:
            raise KernelError(f"export too large for the ioctl interface ({size_bytes} bytes)")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise KernelError(f"cannot open {self.path}: {exc.strerror}") from exc
        _ioctl(self._fd, NBD_SET_BLKSIZE, block_size, "NBD_SET_BLKSIZE")
        _ioctl(self._fd, NBD_SET_SIZE_BLOCKS, blocks, "NBD_SET_SIZE_BLOCKS")
        _ioctl(self._fd, NBD_SET_FLAGS, flags, "NBD_SET_FLAGS")
        if timeout is not None:
            _ioctl(self._fd, NBD_SET_TIMEOUT, timeout, "NBD_SET_TIMEOUT")
        _ioctl(self._fd, NBD_SET_SOCK, sock_fd, "NBD_SET_SOCK")

    def start(self) -> None:
        """Run NBD_DO_IT in a daemon thread; it returns when the device is disconnected."""
        self._thread = threading.Thread(target=self._do_it, name=f"nbd{self.index}-do-it",
                                        daemon=True)
        self._thread.start()

    def _do_it(self) -> None:
        try:
            fcntl.ioctl(self._fd, NBD_DO_IT, 0)
        except OSError as exc:
            # DO_IT returns an error on a normal disconnect on some kernels too.
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.EBADR):
                self.error = KernelError(f"NBD_DO_IT on {self.path}: {exc.strerror}")
                log.error("%s", self.error)
        finally:
            try:
                fcntl.ioctl(self._fd, NBD_CLEAR_SOCK, 0)
            except OSError as exc:
                log.warning("NBD_CLEAR_SOCK on %s: %s", self.path, exc.strerror)
            os.close(self._fd)
            self._fd = -1
            log.info("%s released by the kernel", self.path)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for DO_IT to return; True if it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


def ioctl_disconnect(index: int) -> None:
    """NBD_DISCONNECT on /dev/nbd<index> (makes the owner's DO_IT return)."""
    path = f"/dev/nbd{index}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise KernelError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        _ioctl(fd, NBD_DISCONNECT, 0, f"NBD_DISCONNECT on {path}")
    finally:
        os.close(fd)
