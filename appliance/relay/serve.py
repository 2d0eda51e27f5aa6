"""Glue for ``appliance nbd attach``: connect, hand a socketpair end to the kernel, relay.

Also ``python -m appliance.relay --fd N URI``: relay an already made socket (the
kernel's end lives elsewhere) -- how the tests and the benchmark run the relay in its
own process, exactly as on the board but without the kernel.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

from appliance.errors import UsageError
from appliance.kernel.attach import Attachment, KernelExport, attach, block_size_for
from appliance.nbd.uri import NBDURI
from appliance.relay.policy import ReconnectPolicy
from appliance.relay.relay import Relay
from appliance.relay.replicas import ReplicaSet
from appliance.relay.upstream import Upstream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttachOptions:
    """What ``appliance nbd attach`` was asked for."""

    device: str | None = None
    block_size: int | None = None
    timeout: int = 0
    dead_conn_timeout: int | None = None
    method: str = "auto"  # netlink, else ioctl


def _replicas(uri: NBDURI | Sequence[NBDURI], policy: ReconnectPolicy) -> ReplicaSet:
    uris = [uri] if isinstance(uri, NBDURI) else list(uri)
    return ReplicaSet(uris, timeout=policy.connect_timeout)


def relay_fd(fd: int, uri: NBDURI | Sequence[NBDURI], policy: ReconnectPolicy) -> Relay:
    """A relay serving the socket ``fd`` (taken over) from ``uri`` (or several replicas);
    call ``run()``.

    UsageError, before any connection is made, if ``fd`` is not an open stream socket.
    """
    kernel = _stream_socket(fd)
    connect = _replicas(uri, policy)
    return Relay(kernel, connect, connect(), policy=policy)


def _stream_socket(fd: int) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise UsageError(f"--fd {fd} is not a socket ({exc.strerror or exc}); pass the "
                         f"descriptor of the kernel side's stream socket") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()  # not ours to close
        raise UsageError(f"--fd {fd} is not a stream socket; pass the descriptor of the "
                         f"kernel side's stream socket")
    return sock


def _stop_on_signals(relay: Relay) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.warning("signal %d: stopping the relay", signum)
        relay.stop()

    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; the caller owns stopping then
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def attach_and_serve(uri: NBDURI | Sequence[NBDURI], policy: ReconnectPolicy,
                     opts: AttachOptions, *, first: Upstream | None = None
                     ) -> tuple[Attachment, Relay]:
    """Connect, attach a /dev/nbdN to a socketpair, and build the relay (not yet running).

    ``uri`` may be several replicas of one read-only export (tried in order)."""
    connect = _replicas(uri, policy)
    up = first or connect()
    info = up.info
    bs = block_size_for(opts.block_size, info.min_block_size if info.block_size_sent else None)
    relay_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        att = attach(kernel_end.fileno(), KernelExport(size=info.size, flags=info.flags,
                                                       block_size=bs,
                                                       max_request=info.max_block_size),
                     device=opts.device, timeout=opts.timeout,
                     dead_conn_timeout=opts.dead_conn_timeout, method=opts.method)
    except BaseException:
        relay_end.close()
        up.sock.close()
        raise
    finally:
        kernel_end.close()  # the kernel holds its own reference now
    relay = Relay(relay_end, connect, up, policy=policy)
    _stop_on_signals(relay)
    return att, relay
