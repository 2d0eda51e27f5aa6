"""The values the NBD core hands out and takes in: events, requests, export facts.

All are small frozen dataclasses (``slots=True``), but for the extents of a block-status
reply: :class:`Extents`, a read-only sequence over the decoded payload, since one reply
can describe a million of them.  ``NEED_DATA`` is the sentinel ``next_event()`` returns
when it needs more bytes; it is never ``None``.
"""

from __future__ import annotations

import bisect
import enum
import itertools
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Literal, NamedTuple, overload

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
    """One block-status extent: ``length`` bytes with context-defined ``flags``."""

    length: int
    flags: int


class Extents(Sequence[Extent]):
    """The extents of one block-status chunk, in order: a read-only sequence of Extent.

    Held as one flat array of words, ``length, flags, length, flags, ...``: the chunk's
    payload decoded by a single C call, with nothing built per extent until one is
    asked for.  :attr:`lengths` and :attr:`flags` are the two columns as arrays, for
    callers that work column-wise on a million extents.
    """

    __slots__ = ("_length", "_words")

    def __init__(self, words: array[int] | None = None) -> None:
        """``words``: lengths and flags interleaved; the array is taken over, not copied."""
        words = array("Q") if words is None else words
        if len(words) % 2:
            raise ValueError("extents need a flags word after every length")
        self._words = words
        self._length: int | None = None

    @classmethod
    def of(cls, extents: Iterable[tuple[int, int]]) -> Extents:
        """Extents from ``(length, flags)`` pairs (Extent tuples)."""
        return cls(array("Q", itertools.chain.from_iterable(extents)))

    @property
    def lengths(self) -> array[int]:
        """The extents' lengths (a new array)."""
        return self._words[0::2]

    @property
    def flags(self) -> array[int]:
        """The extents' flags (a new array)."""
        return self._words[1::2]

    @property
    def length(self) -> int:
        """Bytes the extents describe, together."""
        if self._length is None:
            self._length = sum(self._words[0::2])
        return self._length

    def clip(self, length: int) -> Extents:
        """The extents within the first ``length`` bytes, the last one cut short to fit."""
        if self.length <= length:
            return self
        if length <= 0:
            return Extents(self._words[:0])
        ends = list(itertools.accumulate(self._words[0::2]))
        i = bisect.bisect_left(ends, length)  # the first extent that reaches ``length``
        words = self._words[: 2 * i + 2]
        words[2 * i] -= ends[i] - length
        return Extents(words)

    def __len__(self) -> int:
        return len(self._words) // 2

    @overload
    def __getitem__(self, index: int) -> Extent: ...

    @overload
    def __getitem__(self, index: slice) -> Extents: ...

    def __getitem__(self, index: int | slice) -> Extent | Extents:
        if isinstance(index, slice):
            picked = range(len(self))[index]
            if picked.step == 1:
                return Extents(self._words[2 * picked.start: 2 * picked.stop])
            return Extents.of(self[i] for i in picked)
        i = range(len(self))[index]  # IndexError as a sequence raises it
        return Extent(self._words[2 * i], self._words[2 * i + 1])

    def __iter__(self) -> Iterator[Extent]:
        return map(Extent._make, zip(self._words[0::2], self._words[1::2], strict=True))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Extents):
            return NotImplemented
        return self._words == other._words

    def __hash__(self) -> int:
        return hash(tuple(self._words))

    def __repr__(self) -> str:
        return f"Extents.of({list(self)!r})"


@dataclass(frozen=True, slots=True)
class BlockStatus:
    """An NBD_REPLY_TYPE_BLOCK_STATUS(_EXT) chunk for one metadata context."""

    cookie: int
    context_id: int
    context: str
    extents: Extents


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
