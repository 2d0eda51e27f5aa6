"""Client side of fixed newstyle negotiation, sans-IO (bytes in, events out).

Owns the handshake: greeting, client flags, then one option at a time -- STARTTLS,
EXTENDED_HEADERS (falling back to STRUCTURED_REPLY), SET_META_CONTEXT, and GO
(falling back to EXPORT_NAME), INFO, LIST or LIST_META_CONTEXT -- ending in one
result event.  Every reply is checked against proto.md; every NBD_REP_ERR_* the
client cannot work around becomes an :class:`~appliance.errors.OptionError`.  This
module turns bytes into arrivals and acts on them; which handler runs and which
state follows is decided only by the table in :mod:`appliance.nbd.client_states`.

Limits (a lying server must not make us allocate without bound): one option reply
payload may be at most :data:`MAX_OPTION_REPLY` bytes (proto.md's longest legal
reply is a 4096-byte name plus a 4096-byte description, about 8 KiB), and one
option may get at most :data:`MAX_OPTION_REPLIES` replies.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from appliance.errors import LocalProtocolError, OptionError, ProtocolError
from appliance.nbd import proto
from appliance.nbd.client_states import (
    OPTION_OF,
    STATE_OF,
    Arrival,
    Goto,
    Handler,
    State,
    reply_arrival,
    transition,
)
from appliance.nbd.events import (
    ClientNegotiationEvent,
    ConnectionClosed,
    ExportEntry,
    ExportInfo,
    ExportList,
    InfoReceived,
    MetaContextList,
    Negotiated,
    StartTLS,
)
from appliance.nbd.receiver import StickyReceiver

log = logging.getLogger(__name__)

MAX_OPTION_REPLY: Final = 64 * 1024
MAX_OPTION_REPLIES: Final = 10_000

# Information we ask for in NBD_OPT_GO / NBD_OPT_INFO.
_INFO_REQUESTS: Final = (
    proto.NBD_INFO_EXPORT,
    proto.NBD_INFO_NAME,
    proto.NBD_INFO_DESCRIPTION,
    proto.NBD_INFO_BLOCK_SIZE,
)


class Mode(enum.StrEnum):
    """What the client negotiates for."""

    GO = "go"  # NBD_OPT_GO (fallback NBD_OPT_EXPORT_NAME), then transmission
    INFO = "info"  # NBD_OPT_INFO, then NBD_OPT_ABORT
    LIST = "list"  # NBD_OPT_LIST, then NBD_OPT_ABORT
    LIST_META = "list-meta"  # NBD_OPT_LIST_META_CONTEXT, then NBD_OPT_ABORT


def _encode_string(text: str, what: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > proto.NBD_MAX_STRING or "\0" in text:
        raise LocalProtocolError(
            f"{what} {text[:40]!r} is invalid: at most {proto.NBD_MAX_STRING} bytes, no NUL")
    return data


def _decode_string(data: bytes, what: str) -> str:
    if len(data) > proto.NBD_MAX_STRING:
        raise ProtocolError(f"server sent a {what} of {len(data)} bytes (limit 4096)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"server sent a {what} that is not UTF-8") from None


def _server_text(data: bytes) -> str:
    """A server's error message, made safe to show on one line."""
    text = data[: proto.NBD_MAX_STRING].decode("utf-8", "replace")
    return "".join(c if c.isprintable() else " " for c in text).strip()


def _suffix(payload: bytes) -> str:
    """`` (server said: ...)`` for an error reply's message, or nothing."""
    text = _server_text(payload)
    return f" (server said: {text})" if text else ""


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _check_block_sizes(minimum: int, preferred: int, maximum: int) -> tuple[int, int, int]:
    if not _is_power_of_two(minimum) or minimum > proto.NBD_MAX_MIN_BLOCK:
        raise ProtocolError(f"invalid minimum block size {minimum} (a power of 2, "
                            f"at most 64 KiB)")
    if not _is_power_of_two(preferred) or preferred < minimum:
        raise ProtocolError(f"invalid preferred block size {preferred} (a power of 2, "
                            f"at least the minimum {minimum})")
    if maximum < minimum or (maximum % minimum and maximum != proto.NBD_UNLIMITED_MAX_BLOCK):
        raise ProtocolError(f"invalid maximum block size {maximum} (a multiple of the "
                            f"minimum {minimum})")
    return minimum, preferred, maximum


class ClientNegotiation(StickyReceiver[ClientNegotiationEvent]):
    """Negotiate one connection as a client (see :mod:`appliance.nbd` for the flow).

    ``export_name``: the export to use ("" = the server's default).  ``tls``: insist
    on NBD_OPT_STARTTLS before anything else; a server without TLS is an error,
    never a silent plaintext session.  ``structured_replies`` / ``extended_headers``:
    ask for them (extended headers imply structured replies; each falls back if the
    server refuses).  ``meta_contexts``: contexts to select with
    NBD_OPT_SET_META_CONTEXT (mode "go"/"info") or the queries to list (mode
    "list-meta"; none = all).  ``mode``: see :class:`Mode`.

    What happens on each reply is decided by :data:`~appliance.nbd.client_states.TRANSITIONS`;
    this class turns bytes into arrivals and holds one ``_on_<handler>`` method per
    :class:`~appliance.nbd.client_states.Handler`.
    """

    _failed_message = "the negotiation failed earlier; open a new connection"

    def __init__(self, export_name: str = "", *, tls: bool = False,
                 structured_replies: bool = True, extended_headers: bool = True,
                 meta_contexts: Sequence[str] = (), mode: Mode | str = Mode.GO) -> None:
        try:
            self._mode = Mode(mode)
        except ValueError:
            raise LocalProtocolError(
                f"unknown negotiation mode {mode!r} (use go, info, list or list-meta)") from None
        if isinstance(meta_contexts, str):
            raise LocalProtocolError("meta_contexts must be a sequence of names, not a string")
        self._export_name = export_name
        self._name_bytes = _encode_string(export_name, "export name")
        self._queries = [_encode_string(q, "metadata context") for q in meta_contexts]
        self._query_names = tuple(meta_contexts)
        self._tls = tls
        self._want_structured = structured_replies
        self._want_extended = extended_headers and structured_replies

        super().__init__()
        self._out = bytearray()
        self._state = State.GREETING
        self._no_zeroes = False
        self._fixed = True
        self._tls_done = False
        self._structured = False
        self._extended = False
        self._contexts: dict[str, int] = {}
        self._steps: deque[int] = deque()
        self._replies = 0  # replies to the option awaiting its final one
        # accumulated from the replies to the current option
        self._size: int | None = None
        self._flags = 0
        self._block: tuple[int, int, int] | None = None
        self._canonical: str | None = None
        self._description = ""
        self._exports: list[ExportEntry] = []
        self._found: dict[str, int] = {}

    # ----------------------------------------------------------------- public API

    @property
    def state(self) -> str:
        """The current state's name (for logs and tests)."""
        return State.ERROR.value if self._error else self._state.value

    @property
    def tls_required(self) -> bool:
        """The caller asked for TLS."""
        return self._tls

    def data_to_send(self) -> bytes:
        """Bytes to send to the server now (may be empty).

        Still usable after an OptionError: it then holds the NBD_OPT_ABORT that
        proto.md asks for (a soft disconnect); send it if possible, then close.
        """
        out = bytes(self._out)
        self._out.clear()
        return out

    def tls_established(self) -> None:
        """Tell the core the TLS handshake succeeded; negotiation continues over TLS."""
        self._sticky(lambda: self._arrive(Arrival.TLS_ESTABLISHED))

    @property
    def tls_active(self) -> bool:
        """TLS was negotiated and the caller reported the handshake done."""
        return self._tls_done

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the end of negotiation (they belong to transmission)."""
        return self._in.peek(len(self._in))

    # ----------------------------------------------------------------- the machine

    def _check_receive(self) -> None:
        if self._state is State.TLS_HANDSHAKE:
            raise LocalProtocolError(
                "finish the TLS handshake and call tls_established() before feeding data")

    def _check_parse(self) -> None:
        if self._state is State.TLS_HANDSHAKE:
            raise LocalProtocolError("call tls_established() after the TLS handshake")
        if self._state in (State.NEGOTIATED, State.CLOSED):
            raise LocalProtocolError(f"negotiation is over ({self._state.value})")

    def _arrive(self, arrival: Arrival, reply: int = 0, payload: bytes = b"") -> None:
        """Act on what arrived as the table says: the one place the state changes.

        ``reply``: the NBD_REP_* type of an option reply (0 for other arrivals).
        Entering ABORTING or EXPORT_NAME_REPLY sends that option; NEXT_OPTION sends
        the next planned one.
        """
        handler, target = transition(self._state, arrival)
        _HANDLERS[handler](self, reply, payload)
        if target is Goto.NEXT_OPTION:
            target = self._send_next_option()
        elif target is State.ABORTING:
            self._send_option(proto.NBD_OPT_ABORT)
        elif target is State.EXPORT_NAME_REPLY:
            self._send_option(proto.NBD_OPT_EXPORT_NAME, self._name_bytes)
        self._state = target

    @property
    def _opt(self) -> int:
        """The option whose reply the client awaits."""
        return OPTION_OF[self._state]

    def _send_option(self, option: int, payload: bytes = b"") -> None:
        self._out += proto.OPTION_HEADER.pack(proto.IHAVEOPT, option, len(payload))
        self._out += payload
        self._replies = 0

    def _soft_disconnect(self) -> None:
        """Queue NBD_OPT_ABORT before raising an OptionError (proto.md's soft disconnect)."""
        self._send_option(proto.NBD_OPT_ABORT)

    def _plan(self) -> None:
        steps: list[int] = []
        if self._tls:
            steps.append(proto.NBD_OPT_STARTTLS)
        if self._mode is not Mode.LIST:
            if self._want_extended:
                steps.append(proto.NBD_OPT_EXTENDED_HEADERS)
            if self._want_structured:
                steps.append(proto.NBD_OPT_STRUCTURED_REPLY)
            if self._mode is not Mode.LIST_META and self._queries:
                steps.append(proto.NBD_OPT_SET_META_CONTEXT)
        steps.append({
            Mode.GO: proto.NBD_OPT_GO,
            Mode.INFO: proto.NBD_OPT_INFO,
            Mode.LIST: proto.NBD_OPT_LIST,
            Mode.LIST_META: proto.NBD_OPT_LIST_META_CONTEXT,
        }[self._mode])
        self._steps = deque(steps)

    def _send_next_option(self) -> State:
        """Send the next planned option, skipping ones made moot by earlier replies."""
        while self._steps:
            opt = self._steps.popleft()
            if opt == proto.NBD_OPT_STRUCTURED_REPLY and self._extended:
                continue
            if opt == proto.NBD_OPT_SET_META_CONTEXT and not self._structured:
                log.info("no structured replies, so no metadata contexts (block status)")
                continue
            self._send_option(opt, self._option_payload(opt))
            return STATE_OF[opt]
        raise AssertionError("negotiation plan exhausted")  # pragma: no cover

    def _option_payload(self, opt: int) -> bytes:
        if opt in (proto.NBD_OPT_GO, proto.NBD_OPT_INFO):
            self._size = None
            self._flags = 0
            self._block = None
            self._canonical = None
            self._description = ""
            return b"".join((
                proto.U32.pack(len(self._name_bytes)), self._name_bytes,
                proto.U16.pack(len(_INFO_REQUESTS)),
                *(proto.U16.pack(i) for i in _INFO_REQUESTS),
            ))
        if opt in (proto.NBD_OPT_SET_META_CONTEXT, proto.NBD_OPT_LIST_META_CONTEXT):
            self._found = {}
            return b"".join((
                proto.U32.pack(len(self._name_bytes)), self._name_bytes,
                proto.U32.pack(len(self._queries)),
                *(proto.U32.pack(len(q)) + q for q in self._queries),
            ))
        if opt == proto.NBD_OPT_LIST:
            self._exports = []
        return b""

    # ----------------------------------------------------------------- bytes to arrivals

    def _parse_one(self) -> bool:
        """Parse one message if it is complete; False when more data is needed."""
        if self._state is State.GREETING:
            return self._parse_greeting()
        if self._state is State.EXPORT_NAME_REPLY:
            return self._parse_export_name_reply()
        if self._state in OPTION_OF:
            return self._parse_option_reply()
        return False

    def _end_of_data(self) -> bool:
        """No complete message is buffered: EOF arrives, or more bytes are needed."""
        if not self._eof:
            return False
        self._arrive(Arrival.EOF_MID_MESSAGE if len(self._in) else Arrival.EOF)
        return True

    def _parse_greeting(self) -> bool:
        if self._in.has(8) and self._in.peek(8) != b"NBDMAGIC":
            raise ProtocolError("the peer is not an NBD server (no NBDMAGIC greeting)")
        fields = self._in.unpack(proto.GREETING)
        if fields is None:
            return self._end_of_data()
        _magic, magic2, flags = fields
        if magic2 == proto.CLISERV_MAGIC:
            raise ProtocolError("the server speaks oldstyle negotiation (like nbdkit -o), which "
                                "this client does not support: run the server in newstyle "
                                "mode (the default of nbdkit, qemu-nbd and nbd-server)")
        if magic2 != proto.IHAVEOPT:
            raise ProtocolError(f"bad newstyle magic {magic2:#x} in the server greeting")
        greeting = self._in.take(proto.GREETING.size)
        self._arrive(Arrival.GREETING_FIXED if flags & proto.NBD_FLAG_FIXED_NEWSTYLE
                     else Arrival.GREETING_PLAIN, 0, greeting)
        return True

    def _parse_export_name_reply(self) -> bool:
        need = proto.EXPORT_NAME_REPLY.size + (0 if self._no_zeroes else proto.EXPORT_NAME_ZEROES)
        if not self._in.has(need):
            return self._end_of_data()
        self._arrive(Arrival.EXPORT_NAME_DATA, 0, self._in.take(need))
        return True

    def _parse_option_reply(self) -> bool:
        header = self._in.unpack(proto.OPTION_REPLY_HEADER)
        if header is None:
            return self._end_of_data()
        magic, option, reply, length = header
        if magic != proto.NBD_REP_MAGIC:
            raise ProtocolError(f"bad option reply magic {magic:#x}")
        if option != self._opt:
            raise ProtocolError(f"server replied to {proto.opt_name(option)} but the client "
                                f"sent {proto.opt_name(self._opt)}")
        if length > MAX_OPTION_REPLY:
            raise ProtocolError(f"option reply of {length} bytes to {proto.opt_name(option)} "
                                f"(limit {MAX_OPTION_REPLY})")
        if not self._in.has(proto.OPTION_REPLY_HEADER.size + length):
            return self._end_of_data()
        self._replies += 1
        if self._replies > MAX_OPTION_REPLIES:
            raise ProtocolError(f"more than {MAX_OPTION_REPLIES} replies to "
                                f"{proto.opt_name(option)}")
        self._in.skip(proto.OPTION_REPLY_HEADER.size)
        self._arrive(reply_arrival(reply, length), reply, self._in.take(length))
        return True

    # ----------------------------------------------------------------- handlers: greeting

    def _client_flags(self, greeting: bytes) -> None:
        _magic, _magic2, flags = proto.GREETING.unpack(greeting)
        fixed = self._fixed = bool(flags & proto.NBD_FLAG_FIXED_NEWSTYLE)
        self._no_zeroes = bool(flags & proto.NBD_FLAG_NO_ZEROES)
        client = (proto.NBD_FLAG_C_FIXED_NEWSTYLE if fixed else 0) | (
            proto.NBD_FLAG_C_NO_ZEROES if self._no_zeroes else 0)
        self._out += proto.CLIENT_FLAGS.pack(client)

    def _on_start_options(self, _reply: int, greeting: bytes) -> None:
        self._client_flags(greeting)
        self._plan()

    def _on_export_name_only(self, _reply: int, greeting: bytes) -> None:
        self._client_flags(greeting)
        if self._tls:
            raise OptionError("the server does not support fixed newstyle negotiation, so it "
                              "cannot do TLS; refusing to continue without TLS")
        if self._mode is not Mode.GO:
            raise OptionError(f"the server supports only old newstyle negotiation; "
                              f"cannot do '{self._mode.value}'")

    def _on_greeting_cut(self, _reply: int, _payload: bytes) -> None:
        raise ProtocolError("the server closed the connection before finishing its greeting "
                            "(not an NBD server, or it refuses connections)")

    def _on_export_name_done(self, _reply: int, payload: bytes) -> None:
        size, flags = proto.EXPORT_NAME_REPLY.unpack_from(payload)
        self._events.append(Negotiated(self._export_info(size, flags)))

    def _on_export_name_refused(self, _reply: int, _payload: bytes) -> None:
        raise OptionError(
            f"the server closed the connection after NBD_OPT_EXPORT_NAME: no export "
            f"named {self._export_name!r}, or the server refused this client")

    # ----------------------------------------------------------------- handlers: features

    def _on_start_tls(self, _reply: int, _payload: bytes) -> None:
        if len(self._in):
            raise ProtocolError("the server sent unencrypted data after accepting STARTTLS")
        self._events.append(StartTLS())

    def _on_no_tls(self, reply: int, payload: bytes) -> None:
        self._soft_disconnect()
        raise OptionError(
            f"the server does not offer TLS ({proto.rep_name(reply)}){_suffix(payload)}; "
            f"refusing to continue without TLS", option=proto.NBD_OPT_STARTTLS, reply=reply)

    def _on_tls_up(self, _reply: int, _payload: bytes) -> None:
        self._tls_done = True
        # proto.md: the server forgets everything negotiated before STARTTLS.
        self._structured = self._extended = False
        self._contexts = {}

    def _on_extended_on(self, _reply: int, _payload: bytes) -> None:
        self._extended = self._structured = True

    def _on_structured_on(self, _reply: int, _payload: bytes) -> None:
        self._structured = True

    def _on_fall_back(self, reply: int, _payload: bytes) -> None:
        log.info("server refused %s (%s); falling back", proto.opt_name(self._opt),
                 proto.rep_name(reply))

    def _on_meta_context(self, _reply: int, payload: bytes) -> None:
        if len(payload) < 5:
            raise ProtocolError(f"NBD_REP_META_CONTEXT of {len(payload)} bytes (at least 5)")
        (cid,) = proto.META_CONTEXT_ID.unpack_from(payload)
        name = _decode_string(payload[4:], "metadata context name")
        if self._state is State.SET_META_CONTEXT_SENT and (
                name in self._found or cid in self._found.values()):
            raise ProtocolError(f"server selected metadata context {name!r} (id {cid}) twice")
        self._found[name] = cid

    def _on_contexts_chosen(self, _reply: int, _payload: bytes) -> None:
        self._contexts = dict(self._found)
        missing = [q for q in self._query_names if q not in self._contexts]
        if missing:
            log.info("server did not select metadata context(s) %s", ", ".join(missing))

    def _on_no_contexts(self, reply: int, payload: bytes) -> None:
        log.info("server refused NBD_OPT_SET_META_CONTEXT (%s)%s", proto.rep_name(reply),
                 _suffix(payload))
        self._contexts = {}

    # ----------------------------------------------------------------- handlers: results

    def _on_info(self, _reply: int, payload: bytes) -> None:
        if len(payload) < 2:
            raise ProtocolError(f"NBD_REP_INFO of {len(payload)} bytes (at least 2)")
        (itype,) = proto.INFO_TYPE.unpack_from(payload)
        if itype == proto.NBD_INFO_EXPORT:
            if len(payload) != proto.INFO_EXPORT.size:
                raise ProtocolError(f"NBD_INFO_EXPORT of {len(payload)} bytes (must be 12)")
            _, self._size, self._flags = proto.INFO_EXPORT.unpack(payload)
        elif itype == proto.NBD_INFO_BLOCK_SIZE:
            if len(payload) != proto.INFO_BLOCK_SIZE.size:
                raise ProtocolError(f"NBD_INFO_BLOCK_SIZE of {len(payload)} bytes (must be 14)")
            _, minimum, preferred, maximum = proto.INFO_BLOCK_SIZE.unpack(payload)
            self._block = _check_block_sizes(minimum, preferred, maximum)
        elif itype == proto.NBD_INFO_NAME:
            self._canonical = _decode_string(payload[2:], "export name")
        elif itype == proto.NBD_INFO_DESCRIPTION:
            self._description = _decode_string(payload[2:], "export description")
        else:
            log.debug("ignoring unknown NBD_REP_INFO type %d", itype)

    def _on_go_done(self, _reply: int, _payload: bytes) -> None:
        self._events.append(Negotiated(self._export_info(*self._size_and_flags())))

    def _on_info_done(self, _reply: int, _payload: bytes) -> None:
        self._events.append(InfoReceived(self._export_info(*self._size_and_flags())))

    def _on_go_unsupported(self, _reply: int, _payload: bytes) -> None:
        log.info("server does not support NBD_OPT_GO; using NBD_OPT_EXPORT_NAME")

    def _on_server(self, _reply: int, payload: bytes) -> None:
        if len(payload) < 4:
            raise ProtocolError(f"NBD_REP_SERVER of {len(payload)} bytes (at least 4)")
        (n,) = proto.U32.unpack_from(payload)
        if n > len(payload) - 4:
            raise ProtocolError(f"NBD_REP_SERVER name length {n} exceeds the reply")
        name = _decode_string(payload[4 : 4 + n], "export name")
        description = _decode_string(payload[4 + n :], "export description")
        self._exports.append(ExportEntry(name, description))

    def _on_list_done(self, _reply: int, _payload: bytes) -> None:
        self._events.append(ExportList(tuple(self._exports)))

    def _on_list_meta_done(self, _reply: int, _payload: bytes) -> None:
        self._events.append(MetaContextList(self._export_name, tuple(self._found)))

    def _on_closed(self, _reply: int, _payload: bytes) -> None:
        self._events.append(ConnectionClosed())

    def _size_and_flags(self) -> tuple[int, int]:
        if self._size is None:
            raise ProtocolError(f"server accepted {proto.opt_name(self._opt)} without sending "
                                f"NBD_INFO_EXPORT")
        return self._size, self._flags

    def _export_info(self, size: int, flags: int) -> ExportInfo:
        if not flags & proto.NBD_FLAG_HAS_FLAGS:
            log.info("server did not set NBD_FLAG_HAS_FLAGS; assuming no optional features")
            flags = 0
        minimum, preferred, maximum = self._block or (
            proto.NBD_DEFAULT_MIN_BLOCK, proto.NBD_DEFAULT_PREFERRED_BLOCK,
            proto.NBD_DEFAULT_MAX_PAYLOAD)
        return ExportInfo(
            name=self._canonical if self._canonical is not None else self._export_name,
            size=size,
            flags=flags,
            min_block_size=minimum,
            preferred_block_size=preferred,
            max_block_size=maximum,
            description=self._description,
            meta_contexts=MappingProxyType(dict(self._contexts)),
            structured_replies=self._structured,
            extended_headers=self._extended,
            block_size_sent=self._block is not None,
            fixed_newstyle=self._fixed,
        )

    # ----------------------------------------------------------------- handlers: errors

    def _on_refused(self, reply: int, payload: bytes) -> None:
        opt = self._opt
        self._soft_disconnect()
        raise OptionError(self._error_message(opt, reply) + _suffix(payload),
                          option=opt, reply=reply)

    def _on_tls_required(self, reply: int, payload: bytes) -> None:
        opt = self._opt
        self._soft_disconnect()
        if self._tls_done:
            raise ProtocolError(f"server answered {proto.opt_name(opt)} with "
                                f"NBD_REP_ERR_TLS_REQD although TLS is established")
        raise OptionError(f"the server requires TLS; use nbds://{_suffix(payload)}",
                          option=opt, reply=reply)

    def _on_shutting_down(self, reply: int, payload: bytes) -> None:
        opt = self._opt
        self._soft_disconnect()
        raise OptionError(f"the server is shutting down{_suffix(payload)}", option=opt,
                          reply=reply)

    def _on_ack_with_data(self, _reply: int, payload: bytes) -> None:
        raise ProtocolError(f"NBD_REP_ACK to {proto.opt_name(self._opt)} carries "
                            f"{len(payload)} bytes of data")

    def _on_unexpected(self, reply: int, _payload: bytes) -> None:
        raise ProtocolError(f"unexpected {proto.rep_name(reply)} in reply to "
                            f"{proto.opt_name(self._opt)}")

    def _on_closed_early(self, _reply: int, _payload: bytes) -> None:
        raise ProtocolError(f"the server closed the connection while the client waited for "
                            f"the reply to {proto.opt_name(self._opt)}")

    def _error_message(self, opt: int, reply: int) -> str:
        if opt in (proto.NBD_OPT_GO, proto.NBD_OPT_INFO):
            if reply == proto.NBD_REP_ERR_UNKNOWN:
                return f"no export named {self._export_name!r} on the server"
            if reply == proto.NBD_REP_ERR_EXT_HEADER_REQD:
                return ("the server requires extended headers"
                        + ("" if self._want_extended else "; enable them"))
        generic = proto.REP_ERR_MESSAGES.get(reply, f"unknown error reply {reply:#x}")
        return f"{proto.opt_name(opt)} failed: {generic}"


# One method per Handler: a missing one fails at import, not during a negotiation.
_HANDLERS: Final[Mapping[Handler, Callable[[ClientNegotiation, int, bytes], None]]] = (
    MappingProxyType({h: getattr(ClientNegotiation, f"_on_{h.value}") for h in Handler}))
