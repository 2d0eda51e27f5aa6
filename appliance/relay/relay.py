"""The relay: the kernel's simple NBD on one side, the negotiated NBD to the server on the other.

One thread runs a ``selectors`` loop over three sockets: the relay's end of the kernel's
socketpair, the (TLS) connection to the server, and a wake-up socket for the reconnect
thread.  A single thread owns the TLS connection, so reads and writes on one SSL object
never happen at once (OpenSSL does not allow that), and the loop needs no locks.

Kernel side (:class:`~appliance.nbd.ServerTransmission`, simple replies, as
drivers/block/nbd.c expects): every request is recorded in :attr:`Relay.pending` under
the kernel's own 64-bit handle and forwarded at once with that same handle as the NBD
cookie, so as many requests are in flight as the kernel sends (blk-mq queue depth 128).
Replies go back as soon as the server completes them, in the server's order; READ
chunks (OFFSET_DATA / OFFSET_HOLE) are assembled by the core into one buffer and sent as
one simple reply; a structured error becomes the errno in the simple reply (the kernel
turns any non-zero error into an I/O error for that request only).

Ordering of FLUSH and FUA.  The relay never reorders or holds back requests, and it adds
no ordering of its own.  None is needed: proto.md lets a server complete in-flight
requests in any order and promises only that NBD_CMD_FLUSH covers every write that had
*completed* (been replied to) when the flush was received; FUA covers its own write.
The kernel relies on exactly that: the block layer and filesystems wait for the
completion of the writes a flush must cover before they issue the flush (blk-flush
sequences PREFLUSH after the data it orders has completed).  Since the relay replies to
the kernel only after the server replied to the relay, "completed for the kernel"
implies "completed at the server", so the server's guarantee carries over unchanged.

Reconnect and replay.  When the server connection breaks (EOF, reset, TLS error,
protocol error) the kernel side stays open; the :class:`~appliance.relay.reconnect.
Reconnector` thread reconnects with backoff and negotiates again; the export size must be
unchanged (else every waiting request fails with EIO and the outage goes on, loudly
logged).  Then every request without a complete reply is sent again, same cookie, in the
order the kernel sent them.  Replaying is safe because every command the kernel sends is
idempotent when repeated at the same offset with the same payload: READ, WRITE, TRIM,
WRITE_ZEROES, FLUSH.  A replayed WRITE cannot land *after* a newer overlapping WRITE and
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
import errno
import itertools
import logging
import selectors
import socket
import ssl
import time
from collections import deque
from dataclasses import dataclass, field

from appliance.errors import ApplianceError, LocalProtocolError, NBDError
from appliance.nbd import (
    NBD_CMD_DISC,
    NBD_CMD_READ,
    NEED_DATA,
    ClientTransmission,
    ConnectionClosed,
    ExportInfo,
    ReadData,
    ReplyDone,
    Request,
    ServerTransmission,
)
from appliance.relay.policy import ReconnectPolicy
from appliance.relay.reconnect import Reconnector
from appliance.relay.upstream import Connector, Upstream

log = logging.getLogger(__name__)

RECV_SIZE = 1 << 20          # bytes per recv from either side
SEND_CAP = 1 << 20           # bytes per send call (TLS records are cut from this)
READ_BURST = 64              # recv calls per readiness event before serving the other side
DRAIN_TIMEOUT = 30.0         # after NBD_CMD_DISC: how long to wait for in-flight replies
_EV_R, _EV_W = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass
class RelayStats:
    """Counters a status line or a test can read."""

    requests: int = 0
    replies: int = 0
    errors: int = 0
    outages: int = 0
    replayed: int = 0
    outage_seconds: float = 0.0
    failed_by_deadline: int = 0
    bytes_to_kernel: int = 0
    outage_log: list[float] = field(default_factory=list)


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
        self.stats = RelayStats()
        self.pending: dict[int, Request] = {}
        self._srv = ServerTransmission(structured_replies=False, extended_headers=False)
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._reconnector = Reconnector(connect, self.policy, self._wake_w)
        self._k_out = _Out()
        self._up_out = _Out()
        self._up: socket.socket | None = None
        self._tx: ClientTransmission | None = None
        self._up_want_write_on_read = False
        self._outage_since: float | None = None
        self._failing = False          # deadline passed or export changed: EIO at once
        self._closing = False          # the kernel sent NBD_CMD_DISC or closed
        self._kernel_eof = False
        self._stopped = False
        self._drain_until = 0.0
        self._k_mask = _EV_R
        self._up_mask = _EV_R
        self._reads: dict[int, bytes] = {}  # assembled READ data until its ReplyDone
        self._last_rx = time.monotonic()
        self._rview = memoryview(bytearray(RECV_SIZE))  # reused for every server recv
        self._sel.register(self.kernel, _EV_R, "kernel")
        self._sel.register(self._wake_r, _EV_R, "wake")
        self._install(first)

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

    # ------------------------------------------------------------------ loop

    def _finished(self) -> bool:
        if self._stopped or self._kernel_eof:
            return True
        if self._closing:
            if not self.pending and not self._k_out.size:
                return True
            if time.monotonic() > self._drain_until:
                log.warning("giving up on %d requests after NBD_CMD_DISC", len(self.pending))
                return True
        return False

    def _timeout(self) -> float | None:
        if isinstance(self._up, ssl.SSLSocket) and self._up.pending():
            return 0.0  # decrypted bytes wait inside OpenSSL: select cannot see them
        if self._up is not None and self.pending and self.policy.io_timeout is not None:
            return max(0.0, self._last_rx + self.policy.io_timeout - time.monotonic())
        if (self._outage_since is not None and self.policy.deadline is not None
                and not self._failing):
            return max(0.0, self._outage_since + self.policy.deadline - time.monotonic())
        if self._closing:
            return max(0.0, self._drain_until - time.monotonic())
        return None

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
        if isinstance(self._up, ssl.SSLSocket) and self._up.pending():
            self._read_up()
        self._check_deadline()
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

    # ------------------------------------------------------------------ kernel side

    def _read_kernel(self) -> None:
        for _ in range(READ_BURST):
            try:
                data = self.kernel.recv(RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                log.warning("kernel socket failed: %s", exc)
                self._kernel_eof = True
                return
            if not data:
                log.info("the kernel closed its end of the socket")
                self._kernel_eof = True
                return
            self._srv.receive_data(data)
            self._kernel_events()
            if len(data) < RECV_SIZE:
                break
        self._flush_up()
        self._flush_kernel()
        self._interest()

    def _kernel_events(self) -> None:
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
            self._on_request(ev)

    def _on_request(self, req: Request) -> None:
        if req.command == NBD_CMD_DISC:
            log.info("the kernel sent NBD_CMD_DISC; finishing %d requests", len(self.pending))
            self._closing = True
            self._drain_until = time.monotonic() + DRAIN_TIMEOUT
            return
        assert req.cookie is not None
        self.stats.requests += 1
        if not self.pending:
            self._last_rx = time.monotonic()  # the silence clock starts with the first request
        self.pending[req.cookie] = req
        if self._up is not None:
            self._forward(req)
        elif self._failing:
            self._answer(req.cookie, errno.EIO)

    def _answer(self, cookie: int, error: int, data: bytes = b"") -> None:
        self.pending.pop(cookie, None)
        self.stats.replies += 1
        if error:
            self.stats.errors += 1
        self._srv.reply(cookie, error=error, data=data)
        out = self._srv.data_to_send()
        self.stats.bytes_to_kernel += len(out)
        self._k_out.add(out)

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

    def _install(self, up: Upstream) -> None:
        _keepalive(up.sock)
        up.sock.setblocking(False)
        self._last_rx = time.monotonic()
        self._up = up.sock
        self._tx = ClientTransmission(up.info, assemble_reads=True)
        if up.trailing:
            self._tx.receive_data(up.trailing)
        self._up_out.clear()
        self._sel.register(up.sock, _EV_R, "up")
        self._up_mask = _EV_R

    def _forward(self, req: Request) -> None:
        assert self._tx is not None
        try:
            self._tx.check(req)  # an invalid request must not make the connection unusable
            self._tx.send(req)
        except LocalProtocolError as exc:
            # The export no longer allows it (e.g. it became read-only): fail this one.
            assert req.cookie is not None
            log.warning("cannot forward %r: %s", req, exc)
            self._answer(req.cookie, errno.EINVAL if "range" in str(exc) else errno.EIO)
            return
        self._up_out.add(self._tx.data_to_send())

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
                self._lost(f"send failed: {exc}")
                return
            out.consume(sent)

    def _read_up(self) -> None:
        sock, tx = self._up, self._tx
        assert sock is not None and tx is not None
        for _ in range(READ_BURST):
            try:
                n = sock.recv_into(self._rview)
            except (BlockingIOError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                break
            except (OSError, ssl.SSLError) as exc:
                self._lost(f"receive failed: {exc}")
                return
            if not n:
                self._lost("the server closed the connection")
                return
            self._last_rx = time.monotonic()
            try:
                tx.receive_data(self._rview[:n])  # the core copies what it keeps
                self._server_events(tx)
            except NBDError as exc:
                self._lost(f"protocol error: {exc}")
                return
            if self._up is None:
                return
            # No break on a short read: a TLS read returns one record (16 KiB) at a time;
            # reading until EAGAIN saves a select() per record.
        if self._up_want_write_on_read:
            self._up_want_write_on_read = False
            self._flush_up()
        self._flush_kernel()
        self._interest()

    def _server_events(self, tx: ClientTransmission) -> None:
        reads = self._reads
        while True:
            ev = tx.next_event()
            if ev is NEED_DATA:
                return
            if isinstance(ev, ReadData):
                reads[ev.cookie] = ev.data
            elif isinstance(ev, ReplyDone):
                req = self.pending.get(ev.cookie)
                if req is None:
                    log.warning("reply for unknown cookie %#x ignored", ev.cookie)
                    continue
                if ev.error == errno.ESHUTDOWN:
                    # The server is going down (NBD_ESHUTDOWN): not the request's fault;
                    # keep it pending and replay it on the next connection.
                    self._lost("the server is shutting down (NBD_ESHUTDOWN)")
                    return
                data = reads.pop(ev.cookie, b"")
                if not ev.ok:
                    data = b""
                if ev.ok and req.command == NBD_CMD_READ and len(data) != req.length:
                    log.error("READ %#x: got %d bytes of %d", ev.cookie, len(data), req.length)
                    self._answer(ev.cookie, errno.EIO)
                    continue
                if not ev.ok:
                    log.info("%r failed at the server: %s %s", req, errno.errorcode.get(
                        ev.error, ev.error), ev.message)
                self._answer(ev.cookie, ev.error, data)
            elif isinstance(ev, ConnectionClosed):
                self._lost("the server closed the connection")
                return
            # ReadHole never comes with assemble_reads; ErrorChunk is repeated in ReplyDone.

    # ------------------------------------------------------------------ outages

    def _lost(self, why: str) -> None:
        sock = self._up
        if sock is None:
            return
        self._sel.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()
        self._up, self._tx = None, None
        self._up_out.clear()
        self._reads.clear()
        self.stats.outages += 1
        if self._outage_since is None:
            self._outage_since = time.monotonic()
        log.warning("server connection lost (%s); %d requests in flight; reconnecting",
                    why, len(self.pending))
        if not self._closing:
            self._reconnector.start()
        else:
            self._fail_pending("the server went away after NBD_CMD_DISC")

    def _on_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._wake_r.recv(4096)
        while not self._reconnector.results.empty():
            self._reconnected(self._reconnector.results.get())

    def _reconnected(self, up: Upstream) -> None:
        if self._stopped or self._closing or self._up is not None:
            up.sock.close()
            return
        if up.info.size != self.export.size:
            log.error("the export changed size after reconnecting (%d bytes, was %d): "
                      "refusing it; failing %d requests with EIO and retrying",
                      up.info.size, self.export.size, len(self.pending))
            up.sock.close()
            self._failing = True
            self._fail_pending("export size changed")
            self._reconnector.start(first_delay=self.policy.maximum)
            return
        down = time.monotonic() - (self._outage_since or time.monotonic())
        self._outage_since = None
        self._failing = False
        self.stats.outage_seconds += down
        self.stats.outage_log.append(down)
        self._install(up)
        replay = list(self.pending.values())
        self.stats.replayed += len(replay)
        for req in replay:
            self._forward(req)
        log.warning("server back after %.2fs outage; replayed %d requests", down, len(replay))
        self._flush_up()
        self._flush_kernel()
        self._interest()

    def _check_deadline(self) -> None:
        timeout = self.policy.io_timeout
        if (self._up is not None and self.pending and timeout is not None
                and time.monotonic() > self._last_rx + timeout):
            self._lost(f"no reply from the server for {timeout:.0f}s with "
                       f"{len(self.pending)} requests outstanding")
        if (self._outage_since is None or self._failing or self.policy.deadline is None
                or time.monotonic() < self._outage_since + self.policy.deadline):
            return
        self._failing = True
        log.error("server unreachable for %.1fs (deadline): failing %d requests with EIO; "
                  "still reconnecting (%s)", self.policy.deadline, len(self.pending),
                  self._reconnector.last_error or "no answer")
        self._fail_pending("deadline")

    def _fail_pending(self, why: str) -> None:
        cookies = list(self.pending)
        self.stats.failed_by_deadline += len(cookies)
        for cookie in cookies:
            self._answer(cookie, errno.EIO)
        if cookies:
            log.error("%d requests failed with EIO (%s)", len(cookies), why)
        self._flush_kernel()
        self._interest()

    # ------------------------------------------------------------------ end

    def _shutdown(self) -> None:
        self._reconnector.stop()
        if self._up is not None and self._tx is not None and self._closing:
            try:
                self._tx.send(Request(NBD_CMD_DISC))
                self._up.setblocking(True)
                self._up.settimeout(2.0)
                self._up.sendall(self._tx.data_to_send())
            except (ApplianceError, OSError):
                pass
        for sock in (self._up, self.kernel, self._wake_r, self._wake_w):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._sel.close()
        log.info("relay finished: %d requests, %d errors, %d outages (%.2fs), %d replayed",
                 self.stats.requests, self.stats.errors, self.stats.outages,
                 self.stats.outage_seconds, self.stats.replayed)
