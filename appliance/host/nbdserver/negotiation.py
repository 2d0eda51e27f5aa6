"""Server side of fixed newstyle negotiation, sans-IO -- a small one, for tests.

Owns answering a client's options for a fixed set of exports: STARTTLS (optionally
forced), STRUCTURED_REPLY, EXTENDED_HEADERS, SET/LIST_META_CONTEXT, LIST, INFO,
GO, EXPORT_NAME and ABORT; anything else gets NBD_REP_ERR_UNSUP.  Each feature can
be switched off to imitate older servers.  It is strict about the client (any
breach is a ProtocolError) and is what in-memory tests pair ClientNegotiation with.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from appliance.errors import LocalProtocolError, ProtocolError
from appliance.nbd import proto
from appliance.nbd.events import ConnectionClosed, StartTLS
from appliance.nbd.receiver import StickyReceiver

MAX_OPTION_DATA: Final = 64 * 1024
_KNOWN_CLIENT_FLAGS: Final = int(proto.NBD_FLAG_C_FIXED_NEWSTYLE | proto.NBD_FLAG_C_NO_ZEROES)


@dataclass(frozen=True, slots=True)
class ServerExport:
    """One export a ServerNegotiation offers."""

    name: str
    size: int
    flags: int = int(proto.NBD_FLAG_HAS_FLAGS | proto.NBD_FLAG_SEND_FLUSH
                     | proto.NBD_FLAG_SEND_FUA)
    description: str = ""
    block_sizes: tuple[int, int, int] | None = None  # minimum, preferred, maximum
    meta_contexts: tuple[str, ...] = (proto.BASE_ALLOCATION,)


@dataclass(frozen=True, slots=True)
class ClientChoseExport:
    """Negotiation ended: serve ``export`` with a ServerTransmission configured alike."""

    export: ServerExport
    structured_replies: bool
    extended_headers: bool
    meta_contexts: Mapping[str, int] = field(hash=False)


ServerNegotiationEvent = StartTLS | ClientChoseExport | ConnectionClosed


class _State(enum.Enum):
    CLIENT_FLAGS = "client-flags"
    OPTIONS = "options"
    TLS_HANDSHAKE = "tls-handshake"
    DONE = "done"


class ServerNegotiation(StickyReceiver[ServerNegotiationEvent]):
    """Answer one client's negotiation (h11-style API, like ClientNegotiation).

    ``tls``: offer STARTTLS; ``tls_required``: FORCEDTLS mode (every other option
    is answered NBD_REP_ERR_TLS_REQD until TLS is up).  ``structured_replies``,
    ``extended_headers``, ``go``, ``no_zeroes``: which features to offer.
    """

    _failed_message = "the negotiation failed earlier"

    def __init__(self, exports: Sequence[ServerExport], *, tls: bool = False,
                 tls_required: bool = False, structured_replies: bool = True,
                 extended_headers: bool = True, go: bool = True, no_zeroes: bool = True) -> None:
        self._exports = {e.name: e for e in exports}
        self._order = list(exports)
        self._tls_offered = tls or tls_required
        self._tls_required = tls_required
        self._offer_structured = structured_replies
        self._offer_extended = extended_headers and structured_replies
        self._offer_go = go
        self._offer_no_zeroes = no_zeroes
        super().__init__()
        self._out = bytearray()
        self._state = _State.CLIENT_FLAGS
        self._no_zeroes = False
        self._tls_done = False
        self._structured = False
        self._extended = False
        self._contexts: dict[str, int] = {}
        self._context_export = ""
        handshake = int(proto.NBD_FLAG_FIXED_NEWSTYLE) | (
            int(proto.NBD_FLAG_NO_ZEROES) if no_zeroes else 0)
        self._out += proto.GREETING.pack(proto.NBDMAGIC, proto.IHAVEOPT, handshake)

    @property
    def state(self) -> str:
        """The current state's name ("error" once an exception left the object)."""
        return "error" if self._error else self._state.value

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after negotiation ended (the first requests)."""
        return self._in.peek(len(self._in))

    def data_to_send(self) -> bytes:
        """Bytes to send to the client now."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def tls_established(self) -> None:
        """The TLS handshake after StartTLS succeeded."""
        self._sticky(self._tls_up)

    def _tls_up(self) -> None:
        if self._state is not _State.TLS_HANDSHAKE:
            raise LocalProtocolError("tls_established() without StartTLS")
        self._tls_done = True
        self._state = _State.OPTIONS

    # ----------------------------------------------------------------- parsing

    def _check_receive(self) -> None:
        if self._state is _State.TLS_HANDSHAKE or self._eof:
            state = "after EOF" if self._eof else self._state.value
            raise LocalProtocolError(f"receive_data() not allowed now ({state})")

    def _need(self) -> bool:
        if self._eof:
            if len(self._in):
                raise ProtocolError("the client closed the connection mid-message")
            self._state = _State.DONE
            self._events.append(ConnectionClosed())
            return True
        return False

    def _parse_one(self) -> bool:
        if self._state is _State.OPTIONS:
            return self._parse_option()
        if self._state is _State.CLIENT_FLAGS:
            fields = self._in.unpack(proto.CLIENT_FLAGS)
            if fields is None:
                return self._need()
            self._in.skip(proto.CLIENT_FLAGS.size)
            flags = fields[0]
            if flags & ~_KNOWN_CLIENT_FLAGS or (
                    flags & proto.NBD_FLAG_C_NO_ZEROES and not self._offer_no_zeroes):
                raise ProtocolError(f"unknown or unoffered client flags {flags:#x}")
            self._no_zeroes = bool(flags & proto.NBD_FLAG_C_NO_ZEROES)
            self._state = _State.OPTIONS
            return True
        return False  # DONE, or TLS_HANDSHAKE: nothing to parse

    def _parse_option(self) -> bool:
        header = self._in.unpack(proto.OPTION_HEADER)
        if header is None:
            return self._need()
        magic, opt, length = header
        if magic != proto.IHAVEOPT:
            raise ProtocolError(f"bad option magic {magic:#x}")
        if length > MAX_OPTION_DATA:
            raise ProtocolError(f"option data of {length} bytes (limit {MAX_OPTION_DATA})")
        if not self._in.has(proto.OPTION_HEADER.size + length):
            return self._need()
        self._in.skip(proto.OPTION_HEADER.size)
        self._option(opt, self._in.take(length))
        return True

    def _reply(self, opt: int, reply: int, data: bytes = b"") -> None:
        self._out += proto.OPTION_REPLY_HEADER.pack(proto.NBD_REP_MAGIC, opt, reply, len(data))
        self._out += data

    def _option(self, opt: int, data: bytes) -> None:
        if opt == proto.NBD_OPT_EXPORT_NAME:
            self._export_name(data)
            return
        if opt == proto.NBD_OPT_ABORT:
            self._reply(opt, proto.NBD_REP_ACK)
            self._state = _State.DONE
            self._events.append(ConnectionClosed())
            return
        if self._tls_required and not self._tls_done and opt != proto.NBD_OPT_STARTTLS:
            self._reply(opt, proto.NBD_REP_ERR_TLS_REQD, b"TLS is required")
            return
        if opt == proto.NBD_OPT_STARTTLS:
            self._starttls(data)
        elif opt == proto.NBD_OPT_STRUCTURED_REPLY and self._offer_structured:
            self._ack_feature(opt, data, extended=False)
        elif opt == proto.NBD_OPT_EXTENDED_HEADERS and self._offer_extended:
            self._ack_feature(opt, data, extended=True)
        elif opt == proto.NBD_OPT_LIST:
            self._list(data)
        elif opt in (proto.NBD_OPT_SET_META_CONTEXT, proto.NBD_OPT_LIST_META_CONTEXT) and (
                self._offer_structured):
            self._meta(opt, data)
        elif opt in (proto.NBD_OPT_INFO, proto.NBD_OPT_GO) and self._offer_go:
            self._info_go(opt, data)
        else:
            self._reply(opt, proto.NBD_REP_ERR_UNSUP)

    def _starttls(self, data: bytes) -> None:
        opt = proto.NBD_OPT_STARTTLS
        if not self._tls_offered:
            self._reply(opt, proto.NBD_REP_ERR_POLICY, b"TLS not configured")
        elif data or self._tls_done:
            self._reply(opt, proto.NBD_REP_ERR_INVALID)
        else:
            self._reply(opt, proto.NBD_REP_ACK)
            self._structured = self._extended = False
            self._contexts = {}
            self._state = _State.TLS_HANDSHAKE
            self._events.append(StartTLS())

    def _ack_feature(self, opt: int, data: bytes, *, extended: bool) -> None:
        if data:
            self._reply(opt, proto.NBD_REP_ERR_INVALID)
            return
        self._reply(opt, proto.NBD_REP_ACK)
        self._structured = True
        self._extended = self._extended or extended

    def _list(self, data: bytes) -> None:
        opt = proto.NBD_OPT_LIST
        if data:
            self._reply(opt, proto.NBD_REP_ERR_INVALID)
            return
        for e in self._order:
            name = e.name.encode()
            self._reply(opt, proto.NBD_REP_SERVER,
                        proto.U32.pack(len(name)) + name + e.description.encode())
        self._reply(opt, proto.NBD_REP_ACK)

    @staticmethod
    def _string(data: bytes, pos: int) -> tuple[str, int]:
        if pos + 4 > len(data):
            raise ProtocolError("option data ends inside a length field")
        (n,) = proto.U32.unpack_from(data, pos)
        if n > proto.NBD_MAX_STRING or pos + 4 + n > len(data):
            raise ProtocolError(f"string of {n} bytes overruns the option data")
        try:
            return data[pos + 4 : pos + 4 + n].decode("utf-8"), pos + 4 + n
        except UnicodeDecodeError:
            raise ProtocolError("string in option data is not UTF-8") from None

    def _meta(self, opt: int, data: bytes) -> None:
        name, pos = self._string(data, 0)
        if pos + 4 > len(data):
            raise ProtocolError("meta context option lacks the query count")
        (count,) = proto.U32.unpack_from(data, pos)
        pos += 4
        queries = []
        for _ in range(count):
            query, pos = self._string(data, pos)
            queries.append(query)
        if pos != len(data):
            raise ProtocolError("trailing bytes after the meta context queries")
        if not self._structured:
            self._reply(opt, proto.NBD_REP_ERR_INVALID, b"negotiate structured replies first")
            return
        export = self._exports.get(name)
        if export is None:
            self._reply(opt, proto.NBD_REP_ERR_UNKNOWN)
            return
        listing = opt == proto.NBD_OPT_LIST_META_CONTEXT
        chosen = [c for c in export.meta_contexts if any(
            q == c or (listing and q.endswith(":") and c.startswith(q)) for q in queries)]
        if listing and not queries:
            chosen = list(export.meta_contexts)
        if not listing:
            self._contexts = {c: i + 1 for i, c in enumerate(chosen)}
            self._context_export = name
        for i, c in enumerate(chosen):
            cid = 0 if listing else i + 1
            self._reply(opt, proto.NBD_REP_META_CONTEXT, proto.U32.pack(cid) + c.encode())
        self._reply(opt, proto.NBD_REP_ACK)

    def _info_go(self, opt: int, data: bytes) -> None:
        name, pos = self._string(data, 0)
        if pos + 2 > len(data):
            raise ProtocolError("NBD_OPT_INFO/GO lacks the information request count")
        (count,) = proto.U16.unpack_from(data, pos)
        pos += 2
        if pos + 2 * count != len(data):
            raise ProtocolError("NBD_OPT_INFO/GO information requests do not fit its data")
        wanted = {proto.U16.unpack_from(data, pos + 2 * i)[0] for i in range(count)}
        export = self._exports.get(name)
        if export is None:
            self._reply(opt, proto.NBD_REP_ERR_UNKNOWN, f"no export {name!r}".encode())
            return
        self._reply(opt, proto.NBD_REP_INFO,
                    proto.INFO_EXPORT.pack(proto.NBD_INFO_EXPORT, export.size, export.flags))
        if proto.NBD_INFO_NAME in wanted:
            self._reply(opt, proto.NBD_REP_INFO,
                        proto.INFO_TYPE.pack(proto.NBD_INFO_NAME) + export.name.encode())
        if proto.NBD_INFO_DESCRIPTION in wanted and export.description:
            self._reply(opt, proto.NBD_REP_INFO, proto.INFO_TYPE.pack(proto.NBD_INFO_DESCRIPTION)
                        + export.description.encode())
        if export.block_sizes is not None:
            if proto.NBD_INFO_BLOCK_SIZE not in wanted and opt == proto.NBD_OPT_GO:
                self._reply(opt, proto.NBD_REP_ERR_BLOCK_SIZE_REQD)
                return
            self._reply(opt, proto.NBD_REP_INFO,
                        proto.INFO_BLOCK_SIZE.pack(proto.NBD_INFO_BLOCK_SIZE, *export.block_sizes))
        self._reply(opt, proto.NBD_REP_ACK)
        if opt == proto.NBD_OPT_GO:
            self._finish(export)

    def _export_name(self, data: bytes) -> None:
        try:
            name = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("NBD_OPT_EXPORT_NAME is not UTF-8") from None
        export = self._exports.get(name)
        if export is None or (self._tls_required and not self._tls_done):
            # proto.md: this option cannot fail, the server must hang up.
            raise ProtocolError(f"client chose export {name!r}, which it may not have")
        self._out += proto.EXPORT_NAME_REPLY.pack(export.size, export.flags)
        if not self._no_zeroes:
            self._out += bytes(proto.EXPORT_NAME_ZEROES)
        self._finish(export)

    def _finish(self, export: ServerExport) -> None:
        contexts = self._contexts if self._context_export == export.name else {}
        self._state = _State.DONE
        self._events.append(ClientChoseExport(export, self._structured, self._extended,
                                              MappingProxyType(dict(contexts))))
