"""Hand-built NBD wire messages for the core's tests, written from proto.md.

Deliberately independent of ``appliance.nbd.proto``'s struct layouts: every
message is spelled out field by field with ``struct.pack`` formats and literal
magic numbers, so a wrong layout in the core cannot hide behind the same mistake
in the tests.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from appliance.nbd import (
    NEED_DATA,
    ClientNegotiation,
    ClientTransmission,
    ExportInfo,
    ServerTransmission,
)
from appliance.nbd.events import ClientNegotiationEvent, ClientTransmissionEvent

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
EXT_REQUEST_MAGIC = 0x21E41C71
SIMPLE_MAGIC = 0x67446698
STRUCTURED_MAGIC = 0x668E33EF
EXT_REPLY_MAGIC = 0x6E8A278C

# option numbers (proto.md "Option types")
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
OPT_STRUCTURED_REPLY, OPT_LIST_META, OPT_SET_META, OPT_EXTENDED_HEADERS = 8, 9, 10, 11
# option reply types
REP_ACK, REP_SERVER, REP_INFO, REP_META_CONTEXT = 1, 2, 3, 4
ERR = 1 << 31
REP_ERR_UNSUP, REP_ERR_POLICY = ERR + 1, ERR + 2
REP_ERR_INVALID, REP_ERR_PLATFORM = ERR + 3, ERR + 4
REP_ERR_TLS_REQD, REP_ERR_UNKNOWN, REP_ERR_SHUTDOWN = ERR + 5, ERR + 6, ERR + 7
REP_ERR_BLOCK_SIZE_REQD, REP_ERR_TOO_BIG, REP_ERR_EXT_HEADER_REQD = ERR + 8, ERR + 9, ERR + 10
# transmission flags
F_HAS_FLAGS, F_READ_ONLY, F_FLUSH, F_FUA, F_TRIM = 1, 2, 4, 8, 32
F_WRITE_ZEROES, F_DF, F_MULTI_CONN, F_CACHE, F_FAST_ZERO = 64, 128, 256, 1024, 2048
ALL_FLAGS = (F_HAS_FLAGS | F_FLUSH | F_FUA | F_TRIM | F_WRITE_ZEROES | F_DF | F_MULTI_CONN
             | F_CACHE | F_FAST_ZERO)
# chunk types
T_NONE, T_DATA, T_HOLE, T_BS, T_BS_EXT = 0, 1, 2, 5, 6
T_ERROR, T_ERROR_OFFSET = (1 << 15) + 1, (1 << 15) + 2
DONE = 1


def greeting(flags: int = 3) -> bytes:
    """S: NBDMAGIC, IHAVEOPT, 16-bit handshake flags (3 = FIXED_NEWSTYLE|NO_ZEROES)."""
    return NBDMAGIC + struct.pack(">QH", IHAVEOPT, flags)


def option(opt: int, data: bytes = b"") -> bytes:
    """C: IHAVEOPT, option, length, data."""
    return struct.pack(">QII", IHAVEOPT, opt, len(data)) + data


def rep(opt: int, reply: int, data: bytes = b"") -> bytes:
    """S: reply magic, option, reply type, length, data."""
    return struct.pack(">QIII", REP_MAGIC, opt, reply, len(data)) + data


def info_export(size: int, flags: int) -> bytes:
    return struct.pack(">HQH", 0, size, flags)


def info_name(name: str) -> bytes:
    return struct.pack(">H", 1) + name.encode()


def info_description(text: str) -> bytes:
    return struct.pack(">H", 2) + text.encode()


def info_block_size(minimum: int, preferred: int, maximum: int) -> bytes:
    return struct.pack(">HIII", 3, minimum, preferred, maximum)


def meta_context(cid: int, name: str) -> bytes:
    return struct.pack(">I", cid) + name.encode()


def go_data(name: str, infos: Sequence[int] = (0, 1, 2, 3)) -> bytes:
    """C: NBD_OPT_GO / NBD_OPT_INFO data: name, info request list."""
    raw = name.encode()
    return struct.pack(">I", len(raw)) + raw + struct.pack(">H", len(infos)) + b"".join(
        struct.pack(">H", i) for i in infos)


def meta_data(name: str, queries: Sequence[str]) -> bytes:
    raw = name.encode()
    out = struct.pack(">I", len(raw)) + raw + struct.pack(">I", len(queries))
    for q in queries:
        out += struct.pack(">I", len(q.encode())) + q.encode()
    return out


def request(cmd: int, cookie: int, offset: int = 0, length: int = 0, flags: int = 0,
            data: bytes = b"") -> bytes:
    """C: simple request header (28 bytes) + data."""
    return struct.pack(">IHHQQI", REQUEST_MAGIC, flags, cmd, cookie, offset, length) + data


def ext_request(cmd: int, cookie: int, offset: int = 0, length: int = 0, flags: int = 0,
                data: bytes = b"") -> bytes:
    """C: extended request header (32 bytes) + data."""
    return struct.pack(">IHHQQQ", EXT_REQUEST_MAGIC, flags, cmd, cookie, offset, length) + data


def simple(cookie: int, error: int = 0, data: bytes = b"") -> bytes:
    return struct.pack(">IIQ", SIMPLE_MAGIC, error, cookie) + data


def chunk(cookie: int, rtype: int, payload: bytes = b"", flags: int = 0,
          length: int | None = None) -> bytes:
    """S: structured reply chunk (header length defaults to the payload's)."""
    n = len(payload) if length is None else length
    return struct.pack(">IHHQI", STRUCTURED_MAGIC, flags, rtype, cookie, n) + payload


def ext_chunk(cookie: int, rtype: int, payload: bytes = b"", flags: int = 0, offset: int = 0,
              length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return struct.pack(">IHHQQQ", EXT_REPLY_MAGIC, flags, rtype, cookie, offset, n) + payload


def data_payload(offset: int, data: bytes) -> bytes:
    return struct.pack(">Q", offset) + data


def hole_payload(offset: int, size: int) -> bytes:
    return struct.pack(">QI", offset, size)


def bs_payload(cid: int, extents: Iterable[tuple[int, int]]) -> bytes:
    return struct.pack(">I", cid) + b"".join(struct.pack(">II", n, f) for n, f in extents)


def bs_ext_payload(cid: int, extents: Sequence[tuple[int, int]]) -> bytes:
    return struct.pack(">II", cid, len(extents)) + b"".join(
        struct.pack(">QQ", n, f) for n, f in extents)


def error_payload(error: int, message: str = "", offset: int | None = None) -> bytes:
    raw = message.encode()
    out = struct.pack(">IH", error, len(raw)) + raw
    return out if offset is None else out + struct.pack(">Q", offset)


# ------------------------------------------------------------------ drivers


def drain_negotiation(neg: ClientNegotiation, data: bytes = b"",
                      eof: bool = False) -> list[ClientNegotiationEvent]:
    """Feed ``data`` (and EOF) and return every event until NEED_DATA."""
    if data:
        neg.receive_data(data)
    if eof:
        neg.receive_data(b"")
    events: list[ClientNegotiationEvent] = []
    while True:
        ev = neg.next_event()
        if ev is NEED_DATA:
            return events
        events.append(ev)
        if type(ev).__name__ in ("Negotiated", "StartTLS", "ConnectionClosed"):
            return events


def drain(tx: ClientTransmission, data: bytes = b"",
          eof: bool = False) -> list[ClientTransmissionEvent]:
    if data:
        tx.receive_data(data)
    if eof:
        tx.receive_data(b"")
    events: list[ClientTransmissionEvent] = []
    while True:
        ev = tx.next_event()
        if ev is NEED_DATA:
            return events
        events.append(ev)
        if type(ev).__name__ == "ConnectionClosed":
            return events


def export(size: int = 1 << 20, flags: int = ALL_FLAGS, *, structured: bool = True,
           extended: bool = False, contexts: dict[str, int] | None = None,
           minimum: int = 1, preferred: int = 4096, maximum: int = 32 << 20) -> ExportInfo:
    """An ExportInfo as negotiation would produce it."""
    return ExportInfo(name="disk", size=size, flags=flags, min_block_size=minimum,
                      preferred_block_size=preferred, max_block_size=maximum,
                      meta_contexts=dict(contexts or {}), structured_replies=structured,
                      extended_headers=extended)


class Pair:
    """A ClientTransmission and a ServerTransmission joined in memory."""

    def __init__(self, info: ExportInfo, *, assemble_reads: bool = False) -> None:
        self.client = ClientTransmission(info, assemble_reads=assemble_reads)
        self.server = ServerTransmission(structured_replies=info.structured_replies,
                                         extended_headers=info.extended_headers)

    def to_server(self) -> list[object]:
        """Move the client's bytes to the server; return the server's events."""
        self.server.receive_data(self.client.data_to_send())
        events: list[object] = []
        while (ev := self.server.next_event()) is not NEED_DATA:
            events.append(ev)
        return events

    def to_client(self) -> list[ClientTransmissionEvent]:
        """Move the server's bytes to the client; return the client's events."""
        return drain(self.client, self.server.data_to_send())
