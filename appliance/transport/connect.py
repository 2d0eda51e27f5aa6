"""Opening the byte stream to an NBD server: TCP (IPv4/IPv6) or a Unix socket.

Owns the connect timeout and the bounded retry with exponential backoff used for the
initial connection (a server that is still starting, a Unix socket not yet created).
Every failure becomes a :class:`TransportError` naming the address and the URI.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import time
from dataclasses import dataclass

from appliance.backoff import Backoff
from appliance.errors import TransportError
from appliance.nbd.uri import NBDURI

log = logging.getLogger(__name__)

# Errors worth another attempt: the server may simply not be listening yet.
_RETRYABLE = frozenset({errno.ECONNREFUSED, errno.ENOENT, errno.ECONNRESET, errno.ETIMEDOUT,
                        errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN})

SOCKET_BUFFER = 4 << 20  # ask for big kernel buffers: fewer wake-ups on bulk reads


@dataclass(frozen=True)
class ConnectPolicy:
    """How hard to try: ``attempts`` connects, sleeping ``backoff * 2**n`` (capped) between."""

    timeout: float = 10.0
    attempts: int = 4
    backoff: float = 0.2
    max_backoff: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.timeout <= 0 or self.backoff < 0:
            raise ValueError("ConnectPolicy needs attempts >= 1, timeout > 0, backoff >= 0")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        return Backoff(self.backoff, self.max_backoff).delay(attempt)


def _describe(exc: OSError) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host ({exc.strerror})"
    if exc.errno is not None:
        return (exc.strerror or errno.errorcode.get(exc.errno, str(exc.errno))).lower()
    return str(exc)


def _tune(sock: socket.socket) -> None:
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):  # a kernel limit; the defaults still work
            sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _open_once(uri: NBDURI, timeout: float) -> socket.socket:
    if uri.socket is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(uri.socket)
        except BaseException:
            sock.close()
            raise
    else:
        assert uri.host is not None
        sock = socket.create_connection((uri.host, uri.port), timeout=timeout)
    _tune(sock)
    return sock


def open_socket(uri: NBDURI, policy: ConnectPolicy | None = None) -> socket.socket:
    """Connect to the server named by ``uri``; the socket is left in blocking mode with the
    policy's timeout for reads, which the caller may change."""
    policy = policy or ConnectPolicy()
    last: OSError | None = None
    made = 0
    for attempt in range(policy.attempts):
        try:
            sock = _open_once(uri, policy.timeout)
            log.debug("connected to %s on attempt %d", uri.address, attempt + 1)
            return sock
        except OSError as exc:
            last, made = exc, attempt + 1
            retryable = isinstance(exc, TimeoutError) or exc.errno in _RETRYABLE
            if not retryable or attempt + 1 == policy.attempts:
                break
            pause = policy.delay(attempt)
            log.info("connect to %s failed (%s); retrying in %.1fs", uri.address,
                     _describe(exc), pause)
            time.sleep(pause)
    assert last is not None
    tries = f" after {made} attempts" if made > 1 else ""
    raise TransportError(f"cannot connect to {uri.address}{tries}: {_describe(last)} ({uri})")
