"""The relay's decisions, sans-IO: events in, actions out, an explicit state.

:class:`RelayCore` knows nothing of sockets, threads or the clock: the driver
(:mod:`appliance.relay.relay`) hands it events -- a kernel request, bytes from the server,
the connection lost, a new connection offered, a clock tick -- each with the time ``now``,
and carries out the actions it returns: answer the kernel, drop the server connection,
start reconnecting, accept or refuse an offered connection.  Bytes for the server are
pulled with :meth:`RelayCore.data_for_server` (the core owns the server side's
:class:`~appliance.nbd.ClientTransmission`, itself sans-IO).

States (:class:`RelayState`)::

    CONNECTED --lost / io timeout--> OUTAGE --deadline--> FAILING
        ^                              |                     |
        +------- reconnected, same size (replay) ------------+
    CONNECTED --DISC--> DRAINING --no request left / lost / drain timeout--> DONE
    OUTAGE, FAILING --DISC--> DONE (waiting requests fail with EIO)

A request is sent again on at most :data:`MAX_REPLAYS` new connections: when each of
them is lost before its reply, it fails with EIO (a request the server, or the path to
it, always drops the connection on would be replayed for ever otherwise, every new
connection ending the outage and with it the deadline).

A reconnection whose export changed size is refused: waiting requests fail with EIO,
the state becomes FAILING and reconnecting starts again after the backoff's maximum.

Replicas (failover, several URIs): the core is given the first connection's
``fingerprint`` (SHA-256 of the export's first MiB).  Then every offered connection must
match the first one's size, transmission flags and fingerprint
(:func:`replica_mismatch`); a replica that does not is refused, named in the log, and
the next one is tried after the shared backoff, while the waiting requests keep waiting
(the state does not change: the outage deadline, if any, still applies).

A kernel request longer than the server's maximum block size is sent in pieces
(:class:`~appliance.relay.split.Split`, under cookies of the core's choosing) and answered
once, when its pieces are done; a replay sends only its unfinished pieces.  Every other
request goes upstream under the kernel's own cookie -- unless a piece holds that cookie
on the connection, when it borrows a free one.
"""

from __future__ import annotations

import enum
import errno
import logging
from dataclasses import dataclass, field

from appliance.errors import LocalProtocolError, NBDError
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
)
from appliance.relay.policy import ReconnectPolicy
from appliance.relay.split import Split, needs_split

log = logging.getLogger(__name__)

DRAIN_TIMEOUT = 30.0         # after NBD_CMD_DISC: how long to wait for in-flight replies
# A request sent again on this many new connections, each lost before its reply, fails
# with EIO: a request the server (or the path to it) drops the connection on would
# otherwise be replayed for ever, each new connection resetting the outage's deadline.
MAX_REPLAYS = 4
PIECE_COOKIES = 1 << 63      # where the cookies the core chooses start (any free one will do)
MAX_COOKIE = (1 << 64) - 1


class RelayState(enum.Enum):
    """Where the relay stands with the server."""

    CONNECTED = "connected"  # forwarding to the server
    OUTAGE = "outage"        # the server is away; requests wait for the replay
    FAILING = "failing"      # away past the deadline, or the export changed: EIO at once
    DRAINING = "draining"    # NBD_CMD_DISC received; waiting for the requests in flight
    DONE = "done"            # nothing left to relay


@dataclass
class RelayStats:
    """Counters a status line or a test can read."""

    requests: int = 0
    replies: int = 0
    errors: int = 0
    outages: int = 0
    replayed: int = 0
    split: int = 0               # kernel requests sent in pieces
    pieces: int = 0              # pieces sent (replays included)
    outage_seconds: float = 0.0
    failed_by_deadline: int = 0
    failed_by_replays: int = 0   # sent on MAX_REPLAYS new connections, each lost before the reply
    stale_tls_errors: int = 0    # TLS errors from a stale OpenSSL error queue, ignored
    bytes_to_kernel: int = 0
    outage_log: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class KernelRequest:
    """The kernel sent ``request`` (its handle is the cookie)."""

    request: Request


@dataclass(frozen=True, slots=True)
class ServerData:
    """Bytes of the server's replies arrived (the core parses them at once)."""

    data: bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The server connection broke (EOF, reset, TLS error)."""

    why: str


@dataclass(frozen=True, slots=True)
class Reconnected:
    """A new, negotiated server connection is offered; ``trailing``: bytes read past it;
    ``source``: where it came from (for log lines); ``fingerprint``: SHA-256 of its first
    MiB (replicas only)."""

    info: ExportInfo
    trailing: bytes = b""
    source: str = ""
    fingerprint: bytes | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed (the driver's select timed out, or any loop turn)."""


RelayEvent = KernelRequest | ServerData | ConnectionLost | Reconnected | Tick


# ---------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class Answer:
    """Send the kernel a simple reply (``error`` is a local errno, 0 for success)."""

    cookie: int
    error: int = 0
    data: bytes | bytearray = b""


@dataclass(frozen=True, slots=True)
class DropServer:
    """Close the server connection."""

    why: str


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Start reconnecting (after ``delay`` seconds); a no-op while already trying."""

    delay: float = 0.0


@dataclass(frozen=True, slots=True)
class AcceptServer:
    """Use the offered connection from now on (send :meth:`RelayCore.data_for_server`)."""


@dataclass(frozen=True, slots=True)
class RefuseServer:
    """Close the offered connection unused."""

    why: str


RelayAction = Answer | DropServer | Reconnect | AcceptServer | RefuseServer


class RelayCore:
    """Pending requests, replay, deadline and outage accounting for one kernel export.

    ``info`` is the export given to the kernel (every reconnection must have its size);
    the first connection is already up, so the core starts CONNECTED at ``now`` (feed it
    the bytes read past that connection's negotiation as :class:`ServerData`).
    """

    def __init__(self, info: ExportInfo, policy: ReconnectPolicy, now: float, *,
                 fingerprint: bytes | None = None) -> None:
        self.export = info
        self.fingerprint = fingerprint         # replicas: the first connection's first MiB
        self.refused = 0                       # replicas refused since the last accepted one
        self.policy = policy
        self.stats = RelayStats()
        self.pending: dict[int, Request] = {}  # by cookie, in the kernel's order
        self.state = RelayState.CONNECTED
        self.gave_up = False                   # DONE by the drain timeout
        self._replays: dict[int, int] = {}     # kernel cookie -> new connections it was sent on
        self._reads: dict[int, bytes] = {}     # assembled READ data until its ReplyDone
        self._splits: dict[int, Split] = {}    # kernel cookie -> its pieces
        self._route: dict[int, Split] = {}     # upstream cookie of a piece -> its request
        self._alias: dict[int, int] = {}       # borrowed upstream cookie -> kernel cookie
        self._next_cookie = PIECE_COOKIES
        self._last_rx = now
        self._outage_since: float | None = None
        self._drain_until = 0.0
        self._tx: ClientTransmission | None = ClientTransmission(info, assemble_reads=True)

    # ------------------------------------------------------------------ public

    @property
    def connected(self) -> bool:
        """A server connection is in use."""
        return self._tx is not None

    def handle(self, event: RelayEvent, now: float) -> list[RelayAction]:
        """Take one event at time ``now``; return what the driver must do, in order."""
        out: list[RelayAction] = []
        if isinstance(event, KernelRequest):
            self._on_request(event.request, now, out)
        elif isinstance(event, ServerData):
            self._on_data(event.data, now, out)
        elif isinstance(event, Tick):
            self._on_tick(now, out)
        elif isinstance(event, ConnectionLost):
            self._lose(event.why, now, out)
        else:
            self._on_reconnected(event, now, out)
        return out

    def data_for_server(self) -> bytes:
        """Bytes to write to the server connection (forwarded and replayed requests)."""
        return b"" if self._tx is None else self._tx.data_to_send()

    def disconnect_bytes(self) -> bytes:
        """NBD_CMD_DISC for the server, when the kernel disconnected and it is still up."""
        if self._tx is None or self.state not in (RelayState.DRAINING, RelayState.DONE):
            return b""
        try:
            self._tx.send(Request(NBD_CMD_DISC))
        except NBDError:
            return b""
        return self._tx.data_to_send()

    def timeout(self, now: float) -> float | None:
        """Seconds until the next :class:`Tick` matters (None: only events matter): the
        earliest of the silence timeout, the outage deadline and the drain timeout."""
        deadline, io_timeout = self.policy.deadline, self.policy.io_timeout
        ends = []
        if self._tx is not None and self.pending and io_timeout is not None:
            ends.append(self._last_rx + io_timeout)
        if self.state is RelayState.OUTAGE and deadline is not None:
            assert self._outage_since is not None
            ends.append(self._outage_since + deadline)
        if self.state in (RelayState.DRAINING, RelayState.DONE) and not self.gave_up:
            ends.append(self._drain_until)
        return max(0.0, min(ends) - now) if ends else None

    # ------------------------------------------------------------------ kernel

    def _on_request(self, req: Request, now: float, out: list[RelayAction]) -> None:
        if req.command == NBD_CMD_DISC:
            self._on_disc(now, out)
            return
        assert req.cookie is not None
        self.stats.requests += 1
        if not self.pending:
            self._last_rx = now  # the silence clock starts with the first request
        self.pending[req.cookie] = req
        if self._tx is not None:
            self._forward(req, out)
        elif self.state is not RelayState.OUTAGE:
            self._answer(req.cookie, errno.EIO, b"", out)

    def _on_disc(self, now: float, out: list[RelayAction]) -> None:
        if self.state in (RelayState.DRAINING, RelayState.DONE):
            return
        log.info("the kernel sent NBD_CMD_DISC; finishing %d requests", len(self.pending))
        self._drain_until = now + DRAIN_TIMEOUT
        if self._tx is None:  # nothing will come back: reconnecting stops with the relay
            self._fail_pending("the kernel disconnected during an outage", out)
            self.state = RelayState.DONE
            return
        self.state = RelayState.DRAINING
        self._check_drained()

    def _forward(self, req: Request, out: list[RelayAction]) -> None:
        tx, cookie = self._tx, req.cookie
        assert tx is not None and cookie is not None
        split = self._splits.get(cookie)
        if split is None and needs_split(req, tx.info):
            split = self._splits[cookie] = Split(req)
            self.stats.split += 1
            log.debug("%r: larger than the server's maximum block size %d; in pieces",
                      req, tx.info.max_block_size)
        if split is not None:
            self._pump(split, out)
            return
        wire, upstream = req, cookie
        if cookie in self._route or cookie in self._alias:  # held upstream: borrow one
            upstream = self._free_cookie()
            wire = Request(req.command, req.offset, req.length, req.flags, upstream, req.data)
        try:
            tx.check(wire)  # an invalid request must not make the connection unusable
            tx.send(wire)
        except LocalProtocolError as exc:
            # The export does not allow it (e.g. it became read-only): fail this one.
            log.warning("cannot forward %r: %s", req, exc)
            self._answer(cookie, exc.errno, b"", out)
            return
        if upstream != cookie:
            self._alias[upstream] = cookie

    def _pump(self, split: Split, out: list[RelayAction]) -> None:
        """Send ``split``'s next pieces (up to its window); answer it once it is finished."""
        tx = self._tx
        while tx is not None and (piece := split.next_piece(tx.info)) is not None:
            cookie = self._free_cookie()
            wire = Request(piece.command, piece.offset, piece.length, piece.flags, cookie,
                           piece.data)
            try:
                tx.check(wire)
                tx.send(wire)
            except LocalProtocolError as exc:
                log.warning("cannot forward piece %r of %r: %s", wire, split.request, exc)
                split.fail(piece.offset, exc.errno)
                break
            split.sending(cookie, piece)
            self._route[cookie] = split
            self.stats.pieces += 1
        if split.finished:
            self._finish(split, out)

    def _finish(self, split: Split, out: list[RelayAction]) -> None:
        if split.error:
            log.info("%r failed at the server in the piece at offset %d: %s", split.request,
                     split.error_at, errno.errorcode.get(split.error, split.error))
            self._answer(split.cookie, split.error, b"", out)
        else:
            self._answer(split.cookie, 0, split.buf if split.buf is not None else b"", out)

    def _free_cookie(self) -> int:
        """An upstream cookie no request -- kernel's, piece or borrowed -- is using."""
        tx, cookie = self._tx, self._next_cookie
        while (cookie in self._route or cookie in self._alias or cookie in self.pending
               or (tx is not None and cookie in tx.in_flight)):
            cookie = cookie + 1 if cookie < MAX_COOKIE else PIECE_COOKIES
        self._next_cookie = cookie + 1 if cookie < MAX_COOKIE else PIECE_COOKIES
        return cookie

    def _answer(self, cookie: int, error: int, data: bytes | bytearray,
                out: list[RelayAction]) -> None:
        self.pending.pop(cookie, None)
        self._splits.pop(cookie, None)
        self._replays.pop(cookie, None)
        self.stats.replies += 1
        if error:
            self.stats.errors += 1
        out.append(Answer(cookie, error, data))

    def _check_drained(self) -> None:
        if self.state is RelayState.DRAINING and not self.pending:
            self.state = RelayState.DONE

    # ------------------------------------------------------------------ server

    def _on_data(self, data: bytes | bytearray | memoryview, now: float,
                 out: list[RelayAction]) -> None:
        tx = self._tx
        if tx is None:
            return
        self._last_rx = now
        try:
            tx.receive_data(data)  # the core copies what it keeps
            self._server_events(tx, now, out)
        except NBDError as exc:
            self._lose(f"protocol error: {exc}", now, out)
        self._check_drained()

    def _server_events(self, tx: ClientTransmission, now: float,
                       out: list[RelayAction]) -> None:
        reads = self._reads
        while self._tx is tx:
            ev = tx.next_event()
            if ev is NEED_DATA:
                return
            if isinstance(ev, ReadData):
                reads[ev.cookie] = ev.data
            elif isinstance(ev, ReplyDone):
                self._on_reply(ev, now, out)
            elif isinstance(ev, ConnectionClosed):
                self._lose("the server closed the connection", now, out)
            # ReadHole never comes with assemble_reads; ErrorChunk is repeated in ReplyDone.

    def _on_reply(self, ev: ReplyDone, now: float, out: list[RelayAction]) -> None:
        if ev.error == errno.ESHUTDOWN:
            # The server is going down (NBD_ESHUTDOWN): not the request's fault; keep it
            # pending and replay it on the next connection.
            self._lose("the server is shutting down (NBD_ESHUTDOWN)", now, out)
            return
        split = self._route.pop(ev.cookie, None)
        if split is not None:
            self._on_piece(split, ev, out)
            return
        cookie = self._alias.pop(ev.cookie, ev.cookie)
        req = self.pending.get(cookie)
        if req is None:
            log.warning("reply for unknown cookie %#x ignored", ev.cookie)
            return
        data = self._reads.pop(ev.cookie, b"")
        if not ev.ok:
            data = b""
        if ev.ok and req.command == NBD_CMD_READ and len(data) != req.length:
            log.error("READ %#x: got %d bytes of %d", cookie, len(data), req.length)
            self._answer(cookie, errno.EIO, b"", out)
            return
        if not ev.ok:
            log.info("%r failed at the server: %s %s", req,
                     errno.errorcode.get(ev.error, ev.error), ev.message)
        self._answer(cookie, ev.error, data, out)

    def _on_piece(self, split: Split, ev: ReplyDone, out: list[RelayAction]) -> None:
        data = self._reads.pop(ev.cookie, b"")
        if self._splits.get(split.cookie) is not split:  # pragma: no cover
            return  # answered already (cannot happen: answers wait for the pieces in flight)
        if not ev.ok:
            log.debug("piece %#x of %r failed: %s %s", ev.cookie, split.request,
                      errno.errorcode.get(ev.error, ev.error), ev.message)
        split.done(ev.cookie, ev.error, data if ev.ok else b"")
        self._pump(split, out)

    # ------------------------------------------------------------------ outages

    def _lose(self, why: str, now: float, out: list[RelayAction]) -> None:
        if self._tx is None:
            return
        self._tx = None
        self._reads.clear()
        self._route.clear()
        self._alias.clear()
        self.stats.outages += 1
        if self._outage_since is None:
            self._outage_since = now
        out.append(DropServer(why))
        for split in list(self._splits.values()):
            split.lost()  # its pieces in flight go out again with the replay
            if split.finished:  # a piece had failed: nothing left to wait for
                self._finish(split, out)
        log.warning("server connection lost (%s); %d requests in flight; reconnecting",
                    why, len(self.pending))
        if self.state is RelayState.CONNECTED:
            self.state = RelayState.OUTAGE
            out.append(Reconnect())
            return
        self._fail_pending("the server went away after NBD_CMD_DISC", out)
        self.state = RelayState.DONE

    def _on_reconnected(self, ev: Reconnected, now: float, out: list[RelayAction]) -> None:
        if self.state not in (RelayState.OUTAGE, RelayState.FAILING):
            out.append(RefuseServer(f"not needed in state {self.state.value}"))
            return
        if self.fingerprint is not None:  # replicas: a mismatch refuses only this one
            mismatch = replica_mismatch(self.export, self.fingerprint, ev.info, ev.fingerprint)
            if mismatch:
                self._refuse_replica(ev.source, mismatch, out)
                return
        elif ev.info.size != self.export.size:
            log.error("the export changed size after reconnecting (%d bytes, was %d): "
                      "refusing it; failing %d requests with EIO and retrying",
                      ev.info.size, self.export.size, len(self.pending))
            out.append(RefuseServer("export size changed"))
            self.state = RelayState.FAILING
            self._fail_pending("export size changed", out)
            out.append(Reconnect(self.policy.maximum))
            return
        self.refused = 0
        since = self._outage_since if self._outage_since is not None else now
        down = now - since
        self._outage_since = None
        self.stats.outage_seconds += down
        self.stats.outage_log.append(down)
        self.state = RelayState.CONNECTED
        out.append(AcceptServer())
        self._install(ev.info, ev.trailing, now, out)
        replay = self._replay_budget(out)
        self.stats.replayed += len(replay)
        for req in replay:
            if self._tx is None:
                break  # the trailing bytes already broke the new connection
            self._forward(req, out)
        log.warning("server back after %.2fs outage; replayed %d requests", down, len(replay))
        if replay:
            log.info("replayed: %s%s", ", ".join(map(repr, replay[:4])),
                     f" and {len(replay) - 4} more" if len(replay) > 4 else "")

    def _replay_budget(self, out: list[RelayAction]) -> list[Request]:
        """The waiting requests to send again, in the kernel's order; the ones past
        :data:`MAX_REPLAYS` fail with EIO instead."""
        keep = []
        for cookie, req in list(self.pending.items()):
            count = self._replays.get(cookie, 0) + 1
            if count <= MAX_REPLAYS:
                self._replays[cookie] = count
                keep.append(req)
                continue
            log.error("%r failed with EIO: %d connections to the server in a row were "
                      "lost before its reply", req, MAX_REPLAYS)
            self.stats.failed_by_replays += 1
            self._answer(cookie, errno.EIO, b"", out)
        return keep

    def _refuse_replica(self, source: str, mismatch: str, out: list[RelayAction]) -> None:
        delay = self.policy.delay(self.refused)
        self.refused += 1
        log.error("refusing replica %s: %s; %d requests keep waiting; trying the next "
                  "replica in %.1fs", source or "(unnamed)", mismatch, len(self.pending), delay)
        out.append(RefuseServer(f"replica {source}: {mismatch}"))
        out.append(Reconnect(delay))

    def _install(self, info: ExportInfo, trailing: bytes, now: float,
                 out: list[RelayAction]) -> None:
        self._last_rx = now
        self._tx = ClientTransmission(info, assemble_reads=True)
        if trailing:
            self._on_data(trailing, now, out)

    def _on_tick(self, now: float, out: list[RelayAction]) -> None:
        timeout = self.policy.io_timeout
        if (self._tx is not None and self.pending and timeout is not None
                and now > self._last_rx + timeout):
            self._lose(f"no reply from the server for {timeout:.0f}s with "
                       f"{len(self.pending)} requests outstanding", now, out)
        deadline = self.policy.deadline
        if (self.state is RelayState.OUTAGE and deadline is not None
                and self._outage_since is not None and now >= self._outage_since + deadline):
            self.state = RelayState.FAILING
            log.error("server unreachable for %.1fs (deadline): failing %d requests with EIO; "
                      "still reconnecting", deadline, len(self.pending))
            self._fail_pending("deadline", out)
        if (self.state in (RelayState.DRAINING, RelayState.DONE) and not self.gave_up
                and now > self._drain_until):
            if self.pending:
                log.warning("giving up on %d requests after NBD_CMD_DISC", len(self.pending))
            self.gave_up = True
            self.state = RelayState.DONE

    def _fail_pending(self, why: str, out: list[RelayAction]) -> None:
        cookies = list(self.pending)
        self.stats.failed_by_deadline += len(cookies)
        for cookie in cookies:
            self._answer(cookie, errno.EIO, b"", out)
        if cookies:
            log.error("%d requests failed with EIO (%s)", len(cookies), why)


def replica_mismatch(first: ExportInfo, first_fingerprint: bytes, offered: ExportInfo,
                     offered_fingerprint: bytes | None) -> str:
    """Why ``offered`` is not a replica of the first connection's export ("" if it is):
    the size, the transmission flags and the SHA-256 of the first MiB must all match."""
    if offered.size != first.size:
        return f"size {offered.size} bytes, the first server's is {first.size}"
    if offered.flags != first.flags:
        return (f"transmission flags {offered.flags:#06x}, the first server's are "
                f"{first.flags:#06x}")
    if offered_fingerprint is None:
        return "its first MiB was not read"
    if offered_fingerprint != first_fingerprint:
        return (f"its first MiB differs (SHA-256 {offered_fingerprint.hex()[:16]}..., the "
                f"first server's {first_fingerprint.hex()[:16]}...)")
    return ""
