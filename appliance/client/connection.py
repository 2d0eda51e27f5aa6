"""A blocking NBD client connection that drives :class:`appliance.nbd.ClientTransmission`.

Owns the transmission phase over one socket: a pipelined API (``submit`` many requests,
``wait`` for completions, chunks delivered to a per-request handler) and simple blocking
calls on top of it (``pread``, ``pwrite``, ``flush``, ``trim``, ``zero``, ``cache``,
``block_status``).  ``close`` sends NBD_CMD_DISC.  Failures are one-line errors naming
the server and URI: :class:`RequestError` (that request failed, the connection lives on),
:class:`ProtocolError` / :class:`TransportError` (the connection is dead).

The receive path is the hot path of ``appliance nbd copy``: one preallocated buffer,
``recv_into`` as much as the socket has (over TLS: every record already received, not
just one), the core fed a view of it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from appliance.deadline import Deadline
from appliance.errors import NBDError, ProtocolError, RequestError, TransportError
from appliance.nbd import (
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_CACHE,
    NBD_CMD_DISC,
    NBD_CMD_FLAG_REQ_ONE,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_TRIM,
    NBD_CMD_WRITE,
    NBD_CMD_WRITE_ZEROES,
    NEED_DATA,
    BlockStatus,
    ClientTransmission,
    ClientTransmissionEvent,
    ConnectionClosed,
    ExportInfo,
    Extent,
    ReadData,
    ReadHole,
    ReplyDone,
    Request,
    proto,
)
from appliance.nbd.uri import NBDURI

from .negotiation import BUDGET_FACTOR, DEFAULT_TIMEOUT, lost, with_uri

log = logging.getLogger(__name__)

RECV_BUFFER = 1 << 20  # big reads; smaller than L2-hostile multi-MiB copies

DRAIN_TIMEOUT = 5.0  # close(): longest wait for the replies to requests still in flight

TLS_RECORD = 16 * 1024 + 256  # largest TLS plaintext record, with room to spare

Handler = Callable[[ClientTransmissionEvent], None]


@dataclass(frozen=True, slots=True)
class Completion:
    """A finished request: its reply (``done.ok`` or an errno) and the request itself."""

    request: Request
    done: ReplyDone


class Connection:
    """One negotiated NBD connection in the transmission phase."""

    def __init__(self, sock: socket.socket, info: ExportInfo, uri: NBDURI,
                 trailing: bytes = b"", *, reply_timeout: float | None = None) -> None:
        self.sock = sock
        self.timeout = sock.gettimeout() or DEFAULT_TIMEOUT
        # wait() gives up when no request completes for this long (a trickling server)
        self.reply_timeout = reply_timeout or BUDGET_FACTOR * self.timeout
        self.info = info
        self.uri = uri
        self._tx = ClientTransmission(info)
        self._buf = bytearray(RECV_BUFFER)
        self._view = memoryview(self._buf)
        self._handlers: dict[int, Handler] = {}
        self._requests: dict[int, Request] = {}
        self._closed = False
        self._tls = sock if isinstance(sock, ssl.SSLSocket) else None
        self.dead: NBDError | None = None
        if trailing:
            self._tx.receive_data(trailing)

    # ----------------------------------------------------------------- pipelined API

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet completed."""
        return len(self._requests)

    def submit(self, request: Request, handler: Handler | None = None, *,
               send: bool = True) -> int:
        """Send ``request``; chunks (ReadData, ReadHole, BlockStatus...) go to ``handler``.

        Returns the cookie; its :class:`Completion` comes out of :meth:`wait`.  With
        ``send=False`` the request is only queued: :meth:`send_queued` (or the next
        ``submit``/``wait``) puts a batch of them on the wire in one system call.
        """
        self._check_alive()
        try:
            self._tx.check(request)  # an invalid request must not kill the connection
            cookie = self._tx.send(request)
        except NBDError as exc:
            raise with_uri(exc, self.uri) from None
        if handler is not None:
            self._handlers[cookie] = handler
        self._requests[cookie] = request
        if send:
            self._send(self._tx.data_to_send())
        return cookie

    def send_queued(self) -> None:
        """Put every request queued with ``submit(send=False)`` on the wire."""
        out = self._tx.data_to_send()
        if out:
            self._send(out)

    def wait(self) -> list[Completion]:
        """Block until at least one request completes; return every completion now known."""
        if not self._requests:
            return []
        self.send_queued()
        done: list[Completion] = []
        deadline = Deadline(self.reply_timeout)
        while not done:
            left = deadline.remaining or 0.0
            if left <= 0:
                raise self._die(TransportError(
                    f"{self.uri.address}: no reply completed within {self.reply_timeout:g}s "
                    f"{self._when()} (server too slow or stalled) ({self.uri})"))
            if left < self.timeout:
                self.sock.settimeout(left)
            self._receive_some(done)
        if self.sock.gettimeout() != self.timeout:
            self.sock.settimeout(self.timeout)
        return done

    def _send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise self._die(lost(self.uri, exc, self._when())) from None

    def _when(self) -> str:
        n = len(self._requests)
        return f"with {n} request{'s' if n != 1 else ''} in flight" if n else "while idle"

    def _receive_some(self, done: list[Completion]) -> None:
        self._check_alive()
        eof = False
        try:
            n = self.sock.recv_into(self._view)
            if n and self._tls is not None:
                n, eof = self._drain_tls(self._tls, n)
        except OSError as exc:
            raise self._die(lost(self.uri, exc, self._when())) from None
        if n == 0:
            raise self._die(lost(self.uri, None, self._when()))
        tx = self._tx
        try:
            tx.receive_data(self._view[:n])  # the core copies what it keeps
            event = tx.next_event()
            while event is not NEED_DATA:
                self._dispatch(event, done)
                event = tx.next_event()
        except ProtocolError as exc:
            raise self._die(with_uri(exc, self.uri)) from None
        if eof:
            raise self._die(lost(self.uri, None, self._when()))

    def _drain_tls(self, tls: ssl.SSLSocket, n: int) -> tuple[int, bool]:
        """Read the further TLS records already here (SSL_read returns one record, at most
        16 KiB, per call), so that the core parses one big feed instead of many small ones."""
        view, limit = self._view, len(self._buf) - TLS_RECORD
        timeout = tls.gettimeout()
        tls.settimeout(0.0)  # only what is already here
        try:
            while n < limit:
                try:
                    got = tls.recv_into(view[n:])
                except (ssl.SSLWantReadError, BlockingIOError):
                    break
                if not got:
                    return n, True
                n += got
        finally:
            tls.settimeout(timeout)
        return n, False

    def _dispatch(self, event: ClientTransmissionEvent, done: list[Completion]) -> None:
        if type(event) is ReplyDone:
            self._handlers.pop(event.cookie, None)
            done.append(Completion(self._requests.pop(event.cookie), event))
        elif type(event) is ConnectionClosed:
            raise self._die(lost(self.uri, None, self._when()))
        else:
            handler = self._handlers.get(event.cookie)  # type: ignore[union-attr]
            if handler is not None:
                handler(event)

    def _die(self, exc: NBDError) -> NBDError:
        self.dead = exc
        with contextlib.suppress(OSError):
            self.sock.close()
        return exc

    def _check_alive(self) -> None:
        if self.dead is not None:
            raise type(self.dead)(str(self.dead))
        if self._closed:
            raise TransportError(f"{self.uri.address}: connection already closed ({self.uri})")

    def error_for(self, c: Completion) -> RequestError:
        """The RequestError for a failed completion, with offset, length and URI."""
        r, d = c.request, c.done
        length = r.length or len(r.data or b"")
        what = f"{proto.cmd_name(r.command)} at offset {r.offset} length {length}"
        reason = os.strerror(d.error) if d.error else "failed"
        extra = f": {d.message}" if d.message else ""
        return RequestError(f"{self.uri.address}: {what} failed: {reason}{extra} ({self.uri})",
                            error=d.error or errno.EIO, offset=d.offset)

    # ----------------------------------------------------------------- blocking API

    def call(self, request: Request, handler: Handler | None = None) -> Completion:
        """Submit one request and wait for it; raise RequestError if it failed."""
        cookie = self.submit(request, handler)
        pending: list[Completion] = []
        result: Completion | None = None
        while result is None:
            for c in self.wait():
                if c.done.cookie == cookie:
                    result = c
                else:  # pragma: no cover - callers don't mix the two APIs
                    pending.append(c)
        if not result.done.ok:
            raise self.error_for(result)
        return result

    def pread(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` (holes come back as zeroes)."""
        buf = bytearray(length)

        def fill(ev: ClientTransmissionEvent) -> None:
            if type(ev) is ReadData:
                buf[ev.offset - offset:ev.offset - offset + len(ev.data)] = ev.data
            elif type(ev) is ReadHole:
                buf[ev.offset - offset:ev.offset - offset + ev.length] = bytes(ev.length)

        self.call(Request(NBD_CMD_READ, offset, length), fill)
        return bytes(buf)

    def pwrite(self, data: bytes | bytearray | memoryview, offset: int, flags: int = 0) -> None:
        """Write ``data`` at ``offset``."""
        self.call(Request(NBD_CMD_WRITE, offset, len(data), flags, data=data))

    def flush(self) -> None:
        """NBD_CMD_FLUSH."""
        self.call(Request(NBD_CMD_FLUSH))

    def trim(self, offset: int, length: int) -> None:
        """NBD_CMD_TRIM."""
        self.call(Request(NBD_CMD_TRIM, offset, length))

    def zero(self, offset: int, length: int, flags: int = 0) -> None:
        """NBD_CMD_WRITE_ZEROES."""
        self.call(Request(NBD_CMD_WRITE_ZEROES, offset, length, flags))

    def cache(self, offset: int, length: int) -> None:
        """NBD_CMD_CACHE."""
        self.call(Request(NBD_CMD_CACHE, offset, length))

    def block_status(self, offset: int, length: int, *, req_one: bool = False,
                     ) -> dict[str, list[Extent]]:
        """Extents per negotiated metadata context, starting at ``offset``."""
        found: dict[str, list[Extent]] = {}

        def collect(ev: ClientTransmissionEvent) -> None:
            if type(ev) is BlockStatus:
                found.setdefault(ev.context, []).extend(ev.extents)

        flags = NBD_CMD_FLAG_REQ_ONE if req_one else 0
        self.call(Request(NBD_CMD_BLOCK_STATUS, offset, length, flags), collect)
        return found

    # ----------------------------------------------------------------- teardown

    def close(self) -> None:
        """Send NBD_CMD_DISC and close the socket.

        proto.md: the client SHOULD wait until no requests are in flight before sending
        NBD_CMD_DISC.  With requests still in flight (an error, SIGINT, a closed pipe)
        their replies are read and dropped first, for at most ``DRAIN_TIMEOUT`` seconds;
        a disconnect or a close racing the server's replies makes nbdkit 1.32 abort.
        If they do not all arrive in time, the socket is closed without NBD_CMD_DISC.
        """
        if self._closed:
            return
        if self.dead is None and self._requests:
            self._drain(DRAIN_TIMEOUT)
        self._closed = True
        if self.dead is None and not self._requests:
            with contextlib.suppress(NBDError, OSError):
                self._tx.send(Request(NBD_CMD_DISC))
                self.sock.sendall(self._tx.data_to_send())
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()

    def _drain(self, limit: float) -> None:
        """Read and drop the replies to every request in flight, for at most ``limit`` s."""
        self._handlers.clear()  # nobody wants the data any more
        deadline = Deadline(limit)
        done: list[Completion] = []
        try:
            self.send_queued()
            while self._requests:
                left = deadline.remaining or 0.0
                if left <= 0:
                    log.info("%s: %s after %gs; closing without NBD_CMD_DISC",
                             self.uri.address, self._when(), limit)
                    return
                self.sock.settimeout(min(left, self.timeout))
                self._receive_some(done)
        except NBDError:  # the connection died meanwhile: nothing left to wait for
            return

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
