"""A hostile NBD server for tests: a real listening socket on 127.0.0.1, served by a thread.

Each accepted connection runs a *script* ``script(conn: Conn) -> None``.  :class:`Conn`
reads what the client sends (bounded in size and time) and writes raw bytes, so a script
can speak valid NBD (:func:`negotiate` answers options like a small fixed-newstyle server,
replies are built with the core's :class:`~appliance.nbd.ServerTransmission`) and then
break it on purpose: mutated frames, truncation, trickling a byte at a time, refusing or
skipping STARTTLS.  Everything the client sent is kept in :attr:`Conn.received` so tests
can check, for instance, that no option went out in plaintext after ``nbds://``.

The server closes every connection when its script ends (the client then sees EOF), and
:meth:`HostileServer.close` ends the thread; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from appliance.nbd import NEED_DATA, Request, ServerTransmission, proto

LOOPBACK = "127.0.0.1"
IO_TIMEOUT = 5.0  # the longest a script waits for the client
MAX_OPTION_PAYLOAD = 1 << 20


class ClientGone(Exception):
    """The client closed the connection (or stayed silent too long)."""


@dataclass
class Conn:
    """One accepted connection, as seen by a script."""

    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    stop: threading.Event = field(default_factory=threading.Event)

    def recv_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            try:
                chunk = self.sock.recv(n - len(out))
            except OSError as exc:
                raise ClientGone(str(exc)) from None
            if not chunk:
                raise ClientGone("EOF")
            out += chunk
            self.received += chunk
        return bytes(out)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise ClientGone(str(exc)) from None

    def trickle(self, data: bytes, interval: float = 0.1, limit: float = 60.0) -> None:
        """Send ``data`` one byte every ``interval`` seconds (stops after ``limit`` s)."""
        end = time.monotonic() + limit
        for i in range(len(data)):
            if self.stop.wait(interval) or time.monotonic() > end:
                return
            self.send(data[i:i + 1])

    def read_option(self) -> tuple[int, bytes]:
        magic, option, length = proto.OPTION_HEADER.unpack(
            self.recv_exact(proto.OPTION_HEADER.size))
        if magic != proto.IHAVEOPT or length > MAX_OPTION_PAYLOAD:
            raise ClientGone(f"bad option from client: magic {magic:#x} length {length}")
        return option, self.recv_exact(length)

    def read_request(self, srv: ServerTransmission) -> Request | None:
        """The client's next request (None when it disconnects)."""
        while True:
            ev = srv.next_event()
            if isinstance(ev, Request):
                return ev
            if ev is not NEED_DATA:
                return None
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return None
            self.received += chunk
            srv.receive_data(chunk)
            if not chunk:
                return None


Script = Callable[[Conn], None]


class HostileServer:
    """Listen on 127.0.0.1 (a free port) and run ``script`` for every connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(8)
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.conns: list[Conn] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hostile-server", daemon=True)
        self._thread.start()

    def uri(self, export: str = "", *, scheme: str = "nbd", query: str = "") -> str:
        q = f"?{query}" if query else ""
        return f"{scheme}://{LOOPBACK}:{self.port}/{export}{q}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(IO_TIMEOUT)
            conn = Conn(sock, stop=self._stop)
            self.conns.append(conn)
            try:
                self.script(conn)
            except ClientGone:
                pass
            except Exception as exc:  # a bug in the script: reported by close()
                self.errors.append(exc)
            finally:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    @property
    def received(self) -> bytes:
        return b"".join(bytes(c.received) for c in self.conns)

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10.0)

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def hostile(script: Script) -> Iterator[HostileServer]:
    with HostileServer(script) as srv:
        yield srv


# ----------------------------------------------------------------------------- wire pieces

DEFAULT_FLAGS = (proto.NBD_FLAG_HAS_FLAGS | proto.NBD_FLAG_SEND_FLUSH | proto.NBD_FLAG_SEND_FUA
                 | proto.NBD_FLAG_SEND_TRIM | proto.NBD_FLAG_SEND_WRITE_ZEROES)
EXPORT_SIZE = 1 << 20


def greeting(flags: int = proto.NBD_FLAG_FIXED_NEWSTYLE | proto.NBD_FLAG_NO_ZEROES) -> bytes:
    return proto.GREETING.pack(proto.NBDMAGIC, proto.IHAVEOPT, flags)


def option_reply(option: int, reply: int, payload: bytes = b"") -> bytes:
    return proto.OPTION_REPLY_HEADER.pack(proto.NBD_REP_MAGIC, option, reply,
                                          len(payload)) + payload


def _u32_string(data: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = struct.unpack_from("!I", data, pos)
    return data[pos + 4:pos + 4 + n], pos + 4 + n


def meta_queries(payload: bytes) -> list[bytes]:
    """The queries of an NBD_OPT_{SET,LIST}_META_CONTEXT payload."""
    _, pos = _u32_string(payload, 0)
    (count,) = struct.unpack_from("!I", payload, pos)
    pos += 4
    out = []
    for _ in range(min(count, 64)):
        q, pos = _u32_string(payload, pos)
        out.append(q)
    return out


@dataclass
class Agreed:
    """What :func:`negotiate` agreed to with the client."""

    structured: bool = False
    extended: bool = False
    export_name_used: bool = False
    contexts: dict[bytes, int] = field(default_factory=dict)

    def transmission(self) -> ServerTransmission:
        return ServerTransmission(structured_replies=self.structured,
                                  extended_headers=self.extended)


def option_frames(option: int, payload: bytes, agreed: Agreed, *, extended_ok: bool = True,
                  size: int = EXPORT_SIZE, flags: int = DEFAULT_FLAGS) -> list[bytes]:
    """The frames a well-behaved server sends in answer to one option (updates ``agreed``)."""
    if option == proto.NBD_OPT_EXTENDED_HEADERS:
        if not extended_ok:
            return [option_reply(option, proto.NBD_REP_ERR_UNSUP)]
        agreed.extended = agreed.structured = True
        return [option_reply(option, proto.NBD_REP_ACK)]
    if option == proto.NBD_OPT_STRUCTURED_REPLY:
        agreed.structured = True
        return [option_reply(option, proto.NBD_REP_ACK)]
    if option in (proto.NBD_OPT_SET_META_CONTEXT, proto.NBD_OPT_LIST_META_CONTEXT):
        frames = []
        for i, q in enumerate(meta_queries(payload) or [proto.BASE_ALLOCATION.encode()], 1):
            if option == proto.NBD_OPT_SET_META_CONTEXT:
                agreed.contexts[q] = i
            frames.append(option_reply(option, proto.NBD_REP_META_CONTEXT,
                                       proto.U32.pack(i) + q))
        return [*frames, option_reply(option, proto.NBD_REP_ACK)]
    if option in (proto.NBD_OPT_GO, proto.NBD_OPT_INFO):
        info = proto.INFO_EXPORT.pack(proto.NBD_INFO_EXPORT, size, flags)
        block = proto.INFO_BLOCK_SIZE.pack(proto.NBD_INFO_BLOCK_SIZE, 1, 4096, 1 << 20)
        desc = proto.U16.pack(proto.NBD_INFO_DESCRIPTION) + b"hostile test export"
        return [option_reply(option, proto.NBD_REP_INFO, info),
                option_reply(option, proto.NBD_REP_INFO, block),
                option_reply(option, proto.NBD_REP_INFO, desc),
                option_reply(option, proto.NBD_REP_ACK)]
    if option == proto.NBD_OPT_LIST:
        entries = [b"", b"disk", b"other"]
        return [*(option_reply(option, proto.NBD_REP_SERVER, proto.U32.pack(len(e)) + e + b"d")
                  for e in entries), option_reply(option, proto.NBD_REP_ACK)]
    if option == proto.NBD_OPT_ABORT:
        return [option_reply(option, proto.NBD_REP_ACK)]
    if option == proto.NBD_OPT_EXPORT_NAME:
        agreed.export_name_used = True
        return [proto.EXPORT_NAME_REPLY.pack(size, flags)]
    return [option_reply(option, proto.NBD_REP_ERR_UNSUP)]


FrameFilter = Callable[[int, bytes], list[bytes]]


def negotiate(conn: Conn, *, flt: FrameFilter | None = None, extended_ok: bool = True,
              hello: bytes | None = None, counter: list[int] | None = None) -> Agreed | None:
    """Answer the client's options like a small server until NBD_OPT_GO / EXPORT_NAME.

    Every frame sent passes through ``flt(index, frame) -> frames to send`` (index counts
    frames over the connection, starting with the greeting at 0), so a test can mutate,
    drop, duplicate or truncate any one of them.  Returns what was agreed, or None when
    the client ended negotiation (ABORT, or a mode without transmission).
    """
    counter = counter if counter is not None else [0]
    agreed = Agreed()

    def emit(frame: bytes) -> None:
        out = flt(counter[0], frame) if flt is not None else [frame]
        counter[0] += 1
        for piece in out:
            conn.send(piece)

    emit(hello if hello is not None else greeting())
    conn.recv_exact(4)  # client flags
    for _ in range(64):
        option, payload = conn.read_option()
        for frame in option_frames(option, payload, agreed, extended_ok=extended_ok):
            emit(frame)
        if option in (proto.NBD_OPT_GO, proto.NBD_OPT_EXPORT_NAME):
            return agreed
        if option == proto.NBD_OPT_ABORT:
            return None
    return None
