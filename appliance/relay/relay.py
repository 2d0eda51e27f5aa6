"""The relay: the kernel's simple NBD on one side, the negotiated NBD to the server on the other.

Every decision -- what to forward, what to replay, when the deadline fails a request, what
the kernel gets back -- is :class:`~appliance.relay.core.RelayCore`'s (sans-IO); this
module is its driver.  One thread runs a ``selectors`` loop over three sockets: the relay's
end of the kernel's socketpair, the (TLS) connection to the server, and a wake-up socket
for the reconnect thread.  A single thread owns the TLS connection, so reads and writes on
one SSL object never happen at once (OpenSSL does not allow that), and the loop needs no
locks.

Kernel side (:class:`~appliance.nbd.ServerTransmission`, simple replies, as
drivers/block/nbd.c expects): every request is recorded in :attr:`Relay.pending` under
the kernel's own 64-bit handle and forwarded at once with that same handle as the NBD
cookie, so as many requests are in flight as the kernel sends (blk-mq queue depth 128).
Replies go back as soon as the server completes them, in the server's order; READ
chunks (OFFSET_DATA / OFFSET_HOLE) are assembled by the core into one buffer and sent as
one simple reply; a structured error becomes the errno in the simple reply (the kernel
turns any non-zero error into an I/O error for that request only).

Requests larger than the server's maximum block size (a TRIM or WRITE_ZEROES of any size,
or any request when the queue limits could not be lowered) are cut by the core into pieces
the server accepts and answered once, after the last piece; the pieces of a WRITE carry
its flags (FUA on each), so the ordering argument below holds for them unchanged.

Ordering of FLUSH and FUA.  The relay never reorders or holds back requests, and it adds
no ordering of its own.  None is needed: proto.md lets a server complete in-flight
requests in any order and promises only that NBD_CMD_FLUSH covers every write that had
*completed* (been replied to) when the flush was received; FUA covers its own write.
The kernel relies on exactly that: the block layer and filesystems wait for the
completion of the writes a flush must cover before they issue the flush (blk-flush
sequences PREFLUSH after the data it orders has completed).  Since the relay replies to
the kernel only after the server replied to the relay, "completed for the kernel"
implies "completed at the server", so the server's guarantee carries over unchanged.

Failover.  With several replicas (:mod:`appliance.relay.replicas`) the connector tries
them in turn, and the core accepts one only when its size, flags and first MiB match the
first connection's; the replay below then happens on that replica.

Reconnect and replay.  When the server connection breaks (EOF, reset, TLS error,
protocol error) the kernel side stays open; the :class:`~appliance.relay.reconnect.
Reconnector` thread reconnects with backoff and negotiates again; the export size must be
unchanged (else every waiting request fails with EIO and the outage goes on, loudly
logged).  Then every request without a complete reply is sent again, same cookie, in the
order the kernel sent them (of a request in pieces, only the pieces without a reply, cut
again by the new server's limits).  Replaying is safe because every command the kernel
sends is idempotent when repeated at the same offset with the same payload: READ, WRITE,
TRIM, WRITE_ZEROES, FLUSH.  A replayed WRITE cannot land *after* a newer overlapping WRITE and
undo it, because no newer overlapping write can exist while it is unreplied: a page is
not submitted for writeback again while it is still under writeback (PG_writeback), and
for O_DIRECT the block layer makes no promise about overlapping in-flight writes even on
a local disk (their result is undefined, so any order is correct).  The kernel issues
the next write to a block only after the previous one to that block completed, and
completion reaches the kernel only from the relay, after the server's reply.  A READ
replayed after a write it overlapped was likewise concurrent with it, so either data is
correct.  What replay cannot fix: a server *host* crash that loses writes it had already
acknowledged but not flushed (its volatile cache); that is the same contract as a disk's
write cache, and the kernel's FLUSH on the new connection covers only what survived.

During an outage new kernel requests queue in :attr:`pending` and go out with the
replay.  After ``ReconnectPolicy.deadline`` seconds of outage, every waiting request is
answered with EIO, and so is each new one until the server is back (never a hang).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import selectors
import socket
import ssl
import time
from collections import deque

from appliance.errors import NBDError
from appliance.nbd import NEED_DATA, ConnectionClosed, ExportInfo, Request, ServerTransmission
from appliance.nbd.pieces import MAX_SIMPLE_LENGTH
from appliance.relay import stale_tls
from appliance.relay.core import (
    AcceptServer,
    Answer,
    ConnectionLost,
    DropServer,
    KernelRequest,
    Reconnect,
    Reconnected,
    RefuseServer,
    RelayAction,
    RelayCore,
    RelayState,
    RelayStats,
    ServerData,
    Tick,
)
from appliance.relay.policy import ReconnectPolicy
from appliance.relay.reconnect import Reconnector
from appliance.relay.upstream import Connector, Upstream

__all__ = ["Relay", "RelayStats"]

log = logging.getLogger(__name__)

RECV_SIZE = 1 << 20          # bytes per recv from either side
SEND_CAP = 1 << 20           # bytes per send call (TLS records are cut from this)
READ_BURST = 64              # recv calls per readiness event before serving the other side
# The kernel is our own peer, not a client to guard against: take any WRITE its simple
# header can describe (nbd.c's max_hw_sectors keeps them at 32 MiB); the core cuts what
# the server's maximum block size does not allow.
KERNEL_MAX_PAYLOAD = MAX_SIMPLE_LENGTH
_EV_R, _EV_W = selectors.EVENT_READ, selectors.EVENT_WRITE
_TICK = Tick()  # immutable: one for every tick


def _keepalive(sock: socket.socket) -> None:
    """TCP keepalive and a user timeout, so a dead peer is noticed even when idle."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
            (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 10),
            (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 5),
            (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
            (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 30_000)]
    for level, opt, value in opts:
        try:
            sock.setsockopt(level, opt, value)
        except OSError as exc:  # pragma: no cover - an old kernel
            log.debug("setsockopt(%d, %d): %s", level, opt, exc)


def _is_tcp(sock: socket.socket) -> bool:
    return sock.family in (socket.AF_INET, socket.AF_INET6)


def _ack_now(sock: socket.socket) -> None:
    """Send the ACK of what was just read at once, not after the delayed-ACK timer.

    A server that writes a reply as several TLS records without TCP_NODELAY (qemu-nbd 7.2:
    the structured reply's chunk header, then the payload) has Nagle hold the payload
    until the header is acknowledged, and a receiver in ping-pong mode delays that ACK
    (40 ms): measured 44 ms per 4 KiB read against 0.24 ms with this.  TCP_QUICKACK is
    not sticky, so it is set again after each read.
    """
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    except OSError as exc:  # pragma: no cover - a socket closing under us
        log.debug("TCP_QUICKACK: %s", exc)


class _Out:
    """Bytes waiting to be written to one socket, sent from the head."""

    def __init__(self) -> None:
        self.chunks: deque[memoryview] = deque()
        self.size = 0

    def add(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self.chunks.append(memoryview(data))
            self.size += len(data)

    def clear(self) -> None:
        self.chunks.clear()
        self.size = 0

    def head(self, cap: int) -> memoryview:
        """The first chunk, merged with the next ones while small (TLS: fewer records)."""
        first = self.chunks[0]
        if len(first) >= cap or len(self.chunks) == 1 or len(first) > 65536:
            return first[:cap]
        parts = [first]
        total = len(first)
        for chunk in list(self.chunks)[1:]:
            if total + len(chunk) > cap:
                break
            parts.append(chunk)
            total += len(chunk)
        if len(parts) == 1:
            return first
        merged = memoryview(b"".join(parts))
        for _ in parts:
            self.chunks.popleft()
        self.chunks.appendleft(merged)
        return merged

    def consume(self, n: int) -> None:
        self.size -= n
        while n:
            first = self.chunks[0]
            if n >= len(first):
                self.chunks.popleft()
                n -= len(first)
            else:
                self.chunks[0] = first[n:]
                n = 0


class Relay:
    """Serve the kernel end ``kernel`` from the server reached by ``connect``.

    ``first`` is the already negotiated connection whose export was given to the kernel;
    its size is the one every reconnection must match.
    """

    def __init__(self, kernel: socket.socket, connect: Connector, first: Upstream, *,
                 policy: ReconnectPolicy | None = None) -> None:
        self.kernel = kernel
        self.kernel.setblocking(False)
        self.policy = policy or ReconnectPolicy()
        self.export: ExportInfo = first.info
        self.core = RelayCore(first.info, self.policy, time.monotonic(),
                              fingerprint=first.fingerprint)
        self.stats: RelayStats = self.core.stats
        self._srv = ServerTransmission(structured_replies=False, extended_headers=False,
                                       max_payload=KERNEL_MAX_PAYLOAD)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._reconnector = Reconnector(connect, self.policy, self._wake_w)
        self._k_out = _Out()
        self._up_out = _Out()
        self._up: socket.socket | None = None
        self._up_tcp = False  # the server connection is TCP: acknowledge reads at once
        self._up_ssl = False  # ... and TLS: OpenSSL may hold decrypted bytes
        self._offered: socket.socket | None = None  # the connection being offered to the core
        self._up_want_write_on_read = False
        self._kernel_eof = False
        self._stopped = False
        self._k_mask = _EV_R
        self._up_mask = _EV_R
        # One receive buffer for both sides, reused for every recv (no 1 MiB allocation per
        # request); whatever the parsers keep, they copy before the next recv.
        self._rview = memoryview(bytearray(RECV_SIZE))
        self._sel.register(self.kernel, _EV_R, "kernel")
        self._sel.register(self._wake_r, _EV_R, "wake")
        self._use(first.sock)
        if first.trailing:
            self._do(self.core.handle(ServerData(first.trailing), time.monotonic()))

    # ------------------------------------------------------------------ public

    def run(self) -> None:
        """Serve until the kernel disconnects (or :meth:`stop`)."""
        try:
            while not self._finished():
                self._step()
        finally:
            self._shutdown()

    def stop(self) -> None:
        """Ask :meth:`run` to return soon (from any thread)."""
        self._stopped = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"s")

    @property
    def connected(self) -> bool:
        return self._up is not None

    @property
    def pending(self) -> dict[int, Request]:
        """The kernel's requests without a reply, by cookie."""
        return self.core.pending

    # ------------------------------------------------------------------ loop

    def _finished(self) -> bool:
        if self._stopped or self._kernel_eof:
            return True
        core = self.core
        return core.state is RelayState.DONE and (not self._k_out.size or core.gave_up)

    def _tls_pending(self) -> bool:
        """Decrypted bytes wait inside OpenSSL (select cannot see them)."""
        up = self._up
        return self._up_ssl and up is not None and bool(up.pending())  # type: ignore[attr-defined]

    def _timeout(self) -> float | None:
        if self._tls_pending():
            return 0.0  # decrypted bytes wait inside OpenSSL: select cannot see them
        return self.core.timeout(time.monotonic())

    def _step(self) -> None:
        for key, mask in self._sel.select(self._timeout()):
            if key.data == "kernel":
                if mask & _EV_W:
                    self._flush_kernel()
                if mask & _EV_R:
                    self._read_kernel()
            elif key.data == "up":
                if mask & _EV_W:
                    self._flush_up()
                if mask & _EV_R and self._up is not None:
                    self._read_up()
            elif key.data == "wake":
                self._on_wake()
        if self._tls_pending():
            self._read_up()
        now = time.monotonic()
        if self.core.timeout(now) == 0.0:  # a Tick matters only once the core says it is due
            self._do(self.core.handle(_TICK, now))
        self._flush_kernel()
        self._interest()

    def _interest(self) -> None:
        """Re-register each socket for what it waits on now (only when that changed)."""
        k = _EV_R | (_EV_W if self._k_out.size else 0)
        if k != self._k_mask:
            self._sel.modify(self.kernel, k, "kernel")
            self._k_mask = k
        if self._up is not None:
            u = _EV_R | (_EV_W if self._up_out.size else 0)
            if u != self._up_mask:
                self._sel.modify(self._up, u, "up")
                self._up_mask = u

    # ------------------------------------------------------------------ actions

    def _do(self, actions: list[RelayAction]) -> None:
        """Carry out the core's actions, then queue what it has for the server."""
        for action in actions:
            if isinstance(action, Answer):
                self._srv.reply(action.cookie, error=action.error, data=action.data)
            elif isinstance(action, DropServer):
                self._drop()
            elif isinstance(action, Reconnect):
                self._reconnector.start(first_delay=action.delay)
            elif isinstance(action, AcceptServer):
                assert self._offered is not None
                self._use(self._offered)
                self._offered = None
            elif isinstance(action, RefuseServer) and self._offered is not None:
                self._offered.close()
                self._offered = None
        out = self._srv.data_to_send()
        if out:
            self.stats.bytes_to_kernel += len(out)
            self._k_out.add(out)
        if self._up is not None:
            self._up_out.add(self.core.data_for_server())

    # ------------------------------------------------------------------ kernel side

    def _read_kernel(self) -> None:
        view = self._rview  # shared with the server side: each read is parsed (copied) at once
        for _ in range(READ_BURST):
            try:
                n = self.kernel.recv_into(view)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("kernel socket failed: %s", exc)
                self._kernel_eof = True
                return
            if not n:
                log.info("the kernel closed its end of the socket")
                self._kernel_eof = True
                return
            self._srv.receive_data(view[:n])
            self._kernel_events()
            if n < RECV_SIZE:
                break
        self._flush_up()
        self._flush_kernel()
        self._interest()

    def _kernel_events(self) -> None:
        core, now = self.core, time.monotonic()
        while True:
            try:
                ev = self._srv.next_event()
            except NBDError as exc:  # the kernel never sends garbage; treat as fatal
                log.error("bad request from the kernel: %s", exc)
                self._kernel_eof = True
                return
            if ev is NEED_DATA:
                return
            if isinstance(ev, ConnectionClosed):
                self._kernel_eof = True
                return
            self._do(core.handle(KernelRequest(ev), now))

    def _flush_kernel(self) -> None:
        out = self._k_out
        while out.size:
            try:
                sent = self.kernel.sendmsg(itertools.islice(out.chunks, 64))
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("cannot write to the kernel socket: %s", exc)
                self._kernel_eof = True
                out.clear()
                return
            out.consume(sent)

    # ------------------------------------------------------------------ server side

    def _use(self, sock: socket.socket) -> None:
        _keepalive(sock)
        sock.setblocking(False)
        self._up = sock
        self._up_tcp = _is_tcp(sock)
        self._up_ssl = isinstance(sock, ssl.SSLSocket)
        self._up_out.clear()
        self._sel.register(sock, _EV_R, "up")
        self._up_mask = _EV_R

    def _drop(self) -> None:
        sock = self._up
        if sock is None:
            return
        self._sel.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()
        self._up = None
        self._up_out.clear()

    def _stale_tls_error(self, what: str, sock: socket.socket, exc: Exception) -> bool:
        """Whether ``exc`` came from this thread's stale OpenSSL error queue, not from the
        connection (:mod:`appliance.relay.stale_tls`); the queue is emptied if so."""
        if not self._up_ssl or not stale_tls.healthy(sock):
            return False
        stale_tls.clear_thread_errors()
        self.stats.stale_tls_errors += 1
        log.warning("TLS %s reported %s on a healthy connection: a stale OpenSSL error "
                    "(cleared), not a connection loss", what, exc)
        return True

    def _lost(self, why: str) -> None:
        self._do(self.core.handle(ConnectionLost(why), time.monotonic()))

    def _flush_up(self) -> None:
        sock, out = self._up, self._up_out
        while sock is not None and out.size:
            try:
                sent = sock.send(out.head(SEND_CAP))
            except (BlockingIOError, ssl.SSLWantWriteError):
                return
            except ssl.SSLWantReadError:
                self._up_want_write_on_read = True
                return
            except (OSError, ssl.SSLError) as exc:
                if self._stale_tls_error("send", sock, exc):
                    return  # as if it would block: the write is retried when writable
                self._lost(f"send failed: {exc}")
                return
            out.consume(sent)

    def _read_up(self) -> None:
        sock, core = self._up, self.core
        assert sock is not None
        got = False
        for _ in range(READ_BURST):
            try:
                n = sock.recv_into(self._rview)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                break
            except (OSError, ssl.SSLError) as exc:
                if self._stale_tls_error("receive", sock, exc):
                    break  # as if it would block
                self._lost(f"receive failed: {exc}")
                return
            if not n:
                self._lost("the server closed the connection")
                return
            got = True
            self._do(core.handle(ServerData(self._rview[:n]), time.monotonic()))
            if self._up is None:
                return
            if not core.pending and not self._tls_pending():
                break  # every reply is in: no read that would only say EAGAIN
            # No break on a short read: a TLS read returns one record (16 KiB) at a time;
            # reading until EAGAIN saves a select() per record.
        if got and self._up_tcp:
            _ack_now(sock)
        if self._up_want_write_on_read:
            self._up_want_write_on_read = False
            self._flush_up()
        self._flush_kernel()
        self._interest()

    # ------------------------------------------------------------------ outages

    def _on_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        while not self._reconnector.results.empty():
            up = self._reconnector.results.get()
            if self._stopped:
                up.sock.close()
                continue
            self._offered = up.sock
            offer = Reconnected(up.info, up.trailing, source=up.source,
                                fingerprint=up.fingerprint)
            self._do(self.core.handle(offer, time.monotonic()))
            if self._offered is not None:  # neither accepted nor refused: not ours to keep
                self._offered.close()
                self._offered = None
        self._flush_up()
        self._flush_kernel()
        self._interest()

    # ------------------------------------------------------------------ end

    def _shutdown(self) -> None:
        self._reconnector.stop()
        bye = self.core.disconnect_bytes() if self._up is not None else b""
        if self._up is not None and bye:
            try:
                self._up.setblocking(True)
                self._up.settimeout(2.0)
                self._up.sendall(bye)
            except OSError:
                pass
        for sock in (self._up, self.kernel, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._sel.close()
        log.info("relay finished: %d requests (%d in %d pieces), %d errors, %d outages "
                 "(%.2fs), %d replayed", self.stats.requests, self.stats.split,
                 self.stats.pieces, self.stats.errors, self.stats.outages,
                 self.stats.outage_seconds, self.stats.replayed)
