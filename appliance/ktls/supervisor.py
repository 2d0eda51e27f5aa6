"""Attaching a kTLS socket to ``/dev/nbdN``, and the supervisor that keeps it attached.

:func:`opener_for` loads the kernel's TLS and returns what negotiates a
:class:`~appliance.ktls.session.Session` (the boot's server step takes the first one);
:func:`attach_session` gives its socket to the nbd driver with NBD_CMD_CONNECT (netlink
only: the reconnect needs NBD_CMD_RECONFIGURE), telling the driver

* the export's limits (:func:`appliance.kernel.attach.attach` applies the maximum block
  size through :mod:`appliance.kernel.limits`);
* a non-zero request timeout (:data:`REQUEST_TIMEOUT`): with one socket, only then does
  ``nbd_xmit_timeout`` requeue a request left on a dead socket, which then waits in
  ``wait_for_reconnect`` for the new socket; with 0 it only logs "possible stuck request";
* a dead connection timeout: how long requests wait for a new socket before failing
  (``retry.deadline``; "forever" is :data:`FOREVER_S`, which ``* HZ`` still fits the
  32-bit ``long`` of ``wait_event_timeout``).

:class:`Supervisor` then polls two things -- the nbd multicast group for NBD_CMD_LINK_DEAD
and its own descriptor of the kernel's socket, which reports POLLHUP once the driver shuts
it down -- and carries out :class:`~appliance.ktls.core.SupervisorCore`'s actions: one
blocking attempt at a time (nothing else needs serving: the I/O is the kernel's), then
NBD_CMD_RECONFIGURE with the new socket.  Every module it needs is imported before it
starts, so it keeps working after switch_root removed the initramfs.
"""

from __future__ import annotations

import errno
import logging
import select
import socket
import ssl
import time
from collections.abc import Callable

from appliance.errors import ApplianceError, KernelError, KtlsUnavailable, OffloadRefused
from appliance.kernel.attach import Attachment, KernelExport, attach, block_size_for
from appliance.kernel.netlink import FamilyMissing, NBDNetlink, NetlinkRequestError
from appliance.ktls import offload
from appliance.ktls.core import Connect, Discard, Export, Reconfigure, SupervisorCore
from appliance.ktls.session import Session, ktls_context, open_session
from appliance.nbd.uri import NBDURI
from appliance.relay.policy import ReconnectPolicy

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 10   # seconds (NBD_ATTR_TIMEOUT): a request on a dead socket is requeued after it
FOREVER_S = 30 * 86400  # the dead connection timeout for retry.deadline=forever
HUP = select.POLLHUP | select.POLLERR | select.POLLNVAL
TIMEVAL_MAX = 16  # the largest struct timeval SO_SNDTIMEO answers (64-bit time_t)

Opener = Callable[[], Session]


def dead_conn_timeout(deadline: float | None) -> int:
    """NBD_ATTR_DEAD_CONN_TIMEOUT for ``retry.deadline`` (at least 1 s: 0 fails at once)."""
    if deadline is None:
        return FOREVER_S
    return max(1, min(FOREVER_S, round(deadline)))


def kernel_export(session: Session) -> KernelExport:
    """The export as the driver is to see it (block size, flags, the request limit)."""
    info = session.info
    bs = block_size_for(None, info.min_block_size if info.block_size_sent else None)
    return KernelExport(size=info.size, flags=info.flags, block_size=bs,
                        max_request=info.max_block_size)


def prepare(uri: NBDURI, loading: offload.BackgroundLoad | None = None) -> ssl.SSLContext:
    """Load the kernel's TLS (or wait for ``loading``, started earlier) and make the
    context (read the PSK now, while it exists)."""
    ctx = ktls_context(uri)  # first: a plaintext URI needs no modules to be refused
    failed = loading.wait() if loading is not None else offload.load_modules()
    if not offload.kernel_has_tls():
        detail = f" (modprobe: {'; '.join(failed)})" if failed else ""
        raise KtlsUnavailable(f"the kernel has no 'tls' upper-layer protocol{detail}")
    return ctx


def opener_for(uri: NBDURI, policy: ReconnectPolicy,
               loading: offload.BackgroundLoad | None = None) -> Opener:
    """What opens a session with ``uri``: the first one, and the supervisor's reconnects.

    KtlsUnavailable when this kernel cannot serve the path (no ``tls``); the caller falls
    back to the relay.  Each call negotiates once: an NBDError when the server cannot be
    reached, as for the relay, and KtlsUnavailable when the kernel did not take over the
    negotiated cipher.
    """
    ctx = prepare(uri, loading)
    later = [offload.AES_GCM_MODULES]  # loaded at most once, if a session needs them

    def opener() -> Session:
        try:
            return open_session(uri, ctx, timeout=policy.connect_timeout)
        except OffloadRefused as exc:
            if not later or "_AES_" not in exc.cipher or "GCM" not in exc.cipher:
                raise
            log.info("%s; loading AES-GCM and negotiating again", exc)
            offload.load_modules(later.pop())
            return open_session(uri, ctx, timeout=policy.connect_timeout)

    return opener


def attach_session(session: Session, policy: ReconnectPolicy, device: str | None,
                   ) -> Attachment:
    """NBD_CMD_CONNECT with the session's socket; the calling process is the one the
    kernel records in /sys/block/nbdN/pid (``appliance status`` reads it)."""
    try:
        return attach(session.sock.fileno(), kernel_export(session), device=device,
                      timeout=REQUEST_TIMEOUT, dead_conn_timeout=dead_conn_timeout(
                          policy.deadline), method="netlink")
    except FamilyMissing as exc:
        raise KtlsUnavailable(f"{exc}: the kTLS path needs NBD_CMD_RECONFIGURE") from None


def taken_by_driver(session: Session) -> bool:
    """Whether the nbd driver adopted the session's socket: it sets the socket's send
    timeout to the request timeout (``nbd_reconnect_socket``); ours leave it at 0."""
    raw = session.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, TIMEVAL_MAX)
    return any(raw)  # a timeval of this ABI's layout: zero in every byte, or not


class Supervisor:
    """Keeps ``/dev/nbd{index}`` supplied with a live kTLS socket."""

    def __init__(self, index: int, session: Session, opener: Opener,
                 policy: ReconnectPolicy) -> None:
        self.index = index
        self.session = session
        self._opener = opener
        exp = kernel_export(session)
        self.core = SupervisorCore(Export(exp.size, exp.kernel_flags()), policy)
        self._offered: Session | None = None
        self._events = NBDNetlink()
        self._events.watch_link_dead()
        self._poll = select.poll()
        self._poll.register(self._events.fileno(), select.POLLIN)
        self._watched: int | None = None
        self._watch(session)
        self._running = True

    def _watch(self, session: Session) -> None:
        if self._watched is not None:
            self._poll.unregister(self._watched)
        self._watched = session.sock.fileno()
        self._poll.register(self._watched, 0)  # POLLHUP / POLLERR only

    def _unwatch(self) -> None:
        if self._watched is not None:
            self._poll.unregister(self._watched)
            self._watched = None

    def stop(self) -> None:
        self._running = False

    def run(self) -> None:
        """Serve until :meth:`stop` (from a signal handler)."""
        try:
            while self._running:
                self.step()
        finally:
            self._events.close()

    def step(self, max_wait: float | None = None) -> None:
        """Wait for one event or the core's next deadline, and act on it."""
        wait = self.core.wakeup(time.monotonic())
        if max_wait is not None:
            wait = max_wait if wait is None else min(wait, max_wait)
        timeout_ms = None if wait is None else max(0, int(wait * 1000) + 1)
        for fd, mask in self._poll.poll(timeout_ms):
            if fd == self._events.fileno():
                if self.index in self._events.link_dead_indexes():
                    self._act(self.core.link_dead(time.monotonic(),
                                                  confirmed=self._hung_up()))
            elif fd == self._watched and mask & HUP:
                log.warning("nbd%d: the kernel shut its socket down", self.index)
                self._unwatch()
                self._act(self.core.link_dead(time.monotonic()))
        self._act(self.core.tick(time.monotonic()))

    def _hung_up(self) -> bool:
        """Whether the kernel has shut down the socket it holds (marked it dead)."""
        if self._watched is None:
            return True
        probe = select.poll()
        probe.register(self._watched, 0)
        return any(mask & HUP for _, mask in probe.poll(0))

    def _act(self, actions: list[Connect | Reconfigure | Discard]) -> None:
        for action in actions:
            if isinstance(action, Connect):
                self._attempt()
            elif isinstance(action, Reconfigure):
                self._hand_over()
            elif self._offered is not None:
                log.info("closing the unused connection: %s", action.reason)
                self._offered.close()
                self._offered = None

    def _attempt(self) -> None:
        try:
            session = self._opener()
        except (ApplianceError, OSError) as exc:
            self._act(self.core.attempt_failed(time.monotonic(), str(exc)))
            return
        self._offered = session
        exp = kernel_export(session)
        self._act(self.core.session_ready(time.monotonic(), exp.size, exp.kernel_flags()))

    def _hand_over(self) -> None:
        offered = self._offered
        assert offered is not None
        try:
            with NBDNetlink() as nl:
                nl.reconfigure(self.index, fds=(offered.sock.fileno(),))
        except KernelError as exc:
            code = exc.code if isinstance(exc, NetlinkRequestError) else None
            self._act(self.core.handover_refused(time.monotonic(), str(exc),
                                                 nothing_dead=code == errno.ENOSPC))
            return
        if not taken_by_driver(offered):
            self._act(self.core.handover_refused(
                time.monotonic(), "the driver had no dead socket to replace",
                nothing_dead=True))
            return
        old, self.session, self._offered = self.session, offered, None
        old.close()
        self._watch(offered)
        log.info("nbd%d: %s", self.index, offered.offload.describe())
        self._act(self.core.handed_over(time.monotonic()))
