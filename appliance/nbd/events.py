"""The values the NBD core hands out and takes in: events, requests, export facts.

All are small frozen dataclasses (``slots=True``).  ``NEED_DATA`` is the sentinel
``next_event()`` returns when it needs more bytes; it is never ``None``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from appliance.nbd import proto


class _Sentinel(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = _Sentinel.NEED_DATA
"""Returned by ``next_event()`` when more bytes must be fed with ``receive_data``."""

NeedData = Literal[_Sentinel.NEED_DATA]

_EMPTY: Final[Mapping[str, int]] = MappingProxyType({})


# --------------------------------------------------------------------------- export facts


@dataclass(frozen=True, slots=True)
class ExportInfo:
    """What negotiation learnt about one export.

    ``flags`` are the transmission flags (``proto.NBD_FLAG_*``).  Block sizes take
    the proto.md defaults when the server sent no NBD_INFO_BLOCK_SIZE: minimum 1,
    preferred 4096, maximum 32 MiB (capped to the export size is not applied).
    ``meta_contexts`` maps each context the server agreed to (NBD_OPT_SET_META_CONTEXT)
    to the id it chose.
    """

    name: str
    size: int
    flags: int
    min_block_size: int = proto.NBD_DEFAULT_MIN_BLOCK
    preferred_block_size: int = proto.NBD_DEFAULT_PREFERRED_BLOCK
    max_block_size: int = proto.NBD_DEFAULT_MAX_PAYLOAD
    description: str = ""
    meta_contexts: Mapping[str, int] = field(default=_EMPTY, hash=False)
    structured_replies: bool = False
    extended_headers: bool = False
    block_size_sent: bool = False  # the server sent NBD_INFO_BLOCK_SIZE
    fixed_newstyle: bool = True  # False: plain newstyle (NBD_OPT_EXPORT_NAME only)

    def _has(self, flag: int) -> bool:
        return bool(self.flags & int(flag))

    @property
    def read_only(self) -> bool:
        """NBD_FLAG_READ_ONLY: writes, trims and zeroes are refused."""
        return self._has(proto.NBD_FLAG_READ_ONLY)

    @property
    def can_flush(self) -> bool:
        """NBD_FLAG_SEND_FLUSH."""
        return self._has(proto.NBD_FLAG_SEND_FLUSH)

    @property
    def can_fua(self) -> bool:
        """NBD_FLAG_SEND_FUA."""
        return self._has(proto.NBD_FLAG_SEND_FUA)

    @property
    def rotational(self) -> bool:
        """NBD_FLAG_ROTATIONAL."""
        return self._has(proto.NBD_FLAG_ROTATIONAL)

    @property
    def can_trim(self) -> bool:
        """NBD_FLAG_SEND_TRIM."""
        return self._has(proto.NBD_FLAG_SEND_TRIM)

    @property
    def can_write_zeroes(self) -> bool:
        """NBD_FLAG_SEND_WRITE_ZEROES."""
        return self._has(proto.NBD_FLAG_SEND_WRITE_ZEROES)

    @property
    def can_df(self) -> bool:
        """NBD_FLAG_SEND_DF (needs structured replies too)."""
        return self._has(proto.NBD_FLAG_SEND_DF) and self.structured_replies

    @property
    def can_multi_conn(self) -> bool:
        """NBD_FLAG_CAN_MULTI_CONN: several connections see one consistent export."""
        return self._has(proto.NBD_FLAG_CAN_MULTI_CONN)

    @property
    def can_cache(self) -> bool:
        """NBD_FLAG_SEND_CACHE."""
        return self._has(proto.NBD_FLAG_SEND_CACHE)

    @property
    def can_fast_zero(self) -> bool:
        """NBD_FLAG_SEND_FAST_ZERO."""
        return self._has(proto.NBD_FLAG_SEND_FAST_ZERO)

    @property
    def can_block_status(self) -> bool:
        """At least one metadata context was negotiated (structured replies on)."""
        return bool(self.meta_contexts) and self.structured_replies

    def context_name(self, context_id: int) -> str | None:
        """The metadata context name the server gave ``context_id``, if any."""
        for name, cid in self.meta_contexts.items():
            if cid == context_id:
                return name
        return None


@dataclass(frozen=True, slots=True)
class ExportEntry:
    """One export from NBD_OPT_LIST (NBD_REP_SERVER)."""

    name: str
    description: str = ""


# --------------------------------------------------------------------------- negotiation events


@dataclass(frozen=True, slots=True)
class StartTLS:
    """The server accepted NBD_OPT_STARTTLS: wrap the socket in TLS now.

    Send ``data_to_send()`` first (it is empty at this point), do the TLS handshake,
    then call ``ClientNegotiation.tls_established()`` and feed decrypted bytes.
    """


@dataclass(frozen=True, slots=True)
class Negotiated:
    """Negotiation finished (mode "go"): the connection is in transmission now."""

    info: ExportInfo


@dataclass(frozen=True, slots=True)
class InfoReceived:
    """Mode "info": the export's facts (NBD_OPT_INFO); NBD_OPT_ABORT is queued."""

    info: ExportInfo


@dataclass(frozen=True, slots=True)
class ExportList:
    """Mode "list": the server's exports (NBD_OPT_LIST); NBD_OPT_ABORT is queued."""

    exports: tuple[ExportEntry, ...]


@dataclass(frozen=True, slots=True)
class MetaContextList:
    """Mode "list-meta": contexts matching the queries on ``export``; NBD_OPT_ABORT is queued."""

    export: str
    contexts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed the connection (EOF) at a point where that is allowed."""


# --------------------------------------------------------------------------- transmission


@dataclass(frozen=True, slots=True)
class Request:
    """One transmission request (client side: to send; server side: received event).

    ``command`` is an ``NBD_CMD_*`` value, ``flags`` ``NBD_CMD_FLAG_*`` bits.  For
    NBD_CMD_WRITE ``data`` is the payload and ``length`` may be left 0 (it is taken
    from ``data``).  ``cookie`` (the "handle" of older spec versions) may be chosen
    by the caller -- the relay reuses the kernel's -- or left None to be assigned.
    """

    command: int
    offset: int = 0
    length: int = 0
    flags: int = 0
    cookie: int | None = None
    data: bytes | bytearray | memoryview | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (f"Request({proto.cmd_name(self.command)}, offset={self.offset}, "
                f"length={self.length}, flags={self.flags:#x}, cookie={self.cookie})")


@dataclass(frozen=True, slots=True)
class ReadData:
    """Data for a READ: a simple reply's payload or an NBD_REPLY_TYPE_OFFSET_DATA chunk."""

    cookie: int
    offset: int
    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"ReadData(cookie={self.cookie}, offset={self.offset}, len={len(self.data)})"


@dataclass(frozen=True, slots=True)
class ReadHole:
    """An NBD_REPLY_TYPE_OFFSET_HOLE chunk: ``length`` bytes of zeroes at ``offset``."""

    cookie: int
    offset: int
    length: int


class Extent(NamedTuple):
    """One block-status extent: ``length`` bytes with context-defined ``flags``.

    A named tuple, not a dataclass: a reply can carry a million extents, and building a
    tuple from the unpacked fields (``Extent._make``) costs a fraction of a dataclass.
    """

    length: int
    flags: int


@dataclass(frozen=True, slots=True)
class BlockStatus:
    """An NBD_REPLY_TYPE_BLOCK_STATUS(_EXT) chunk for one metadata context."""

    cookie: int
    context_id: int
    context: str
    extents: tuple[Extent, ...]


@dataclass(frozen=True, slots=True)
class ErrorChunk:
    """An NBD_REPLY_TYPE_ERROR(_OFFSET) chunk; the final ReplyDone carries the error too."""

    cookie: int
    error: int  # local errno value
    message: str = ""
    offset: int | None = None


@dataclass(frozen=True, slots=True)
class ReplyDone:
    """The reply to ``cookie`` is complete.

    ``error`` is 0 on success, else a local errno value (the first error the server
    reported for this request); ``message`` is the server's text if it sent one.
    """

    cookie: int
    command: int
    error: int = 0
    message: str = ""
    offset: int | None = None  # from NBD_REPLY_TYPE_ERROR_OFFSET

    @property
    def ok(self) -> bool:
        """The request succeeded."""
        return self.error == 0


ClientNegotiationEvent = StartTLS | Negotiated | InfoReceived | ExportList | MetaContextList | \
    ConnectionClosed
ClientTransmissionEvent = ReadData | ReadHole | BlockStatus | ErrorChunk | ReplyDone | \
    ConnectionClosed
ServerTransmissionEvent = Request | ConnectionClosed
