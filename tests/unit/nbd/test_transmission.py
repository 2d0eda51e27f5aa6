"""ClientTransmission: request bytes, reply parsing, validation, hostile replies."""

from __future__ import annotations

import errno

import pytest

from appliance.errors import LocalProtocolError, ProtocolError
from appliance.nbd import (
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_CACHE,
    NBD_CMD_DISC,
    NBD_CMD_FLAG_DF,
    NBD_CMD_FLAG_FAST_ZERO,
    NBD_CMD_FLAG_FUA,
    NBD_CMD_FLAG_NO_HOLE,
    NBD_CMD_FLAG_REQ_ONE,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_TRIM,
    NBD_CMD_WRITE,
    NBD_CMD_WRITE_ZEROES,
    NEED_DATA,
    BlockStatus,
    ClientTransmission,
    ConnectionClosed,
    ErrorChunk,
    Extent,
    Extents,
    ReadData,
    ReadHole,
    ReplyDone,
    Request,
)
from appliance.nbd.events import ExportInfo
from tests.unit.nbd import wire as w
from tests.unit.nbd.wire import drain, export

CTX = {"base:allocation": 1, "qemu:dirty-bitmap:b": 2}

# ------------------------------------------------------------------ requests on the wire


@pytest.mark.parametrize(("request_", "expected"), [
    (Request(NBD_CMD_READ, 4096, 512, cookie=7), w.request(0, 7, 4096, 512)),
    (Request(NBD_CMD_READ, 0, 512, NBD_CMD_FLAG_DF | NBD_CMD_FLAG_FUA, cookie=8),
     w.request(0, 8, 0, 512, flags=5)),
    (Request(NBD_CMD_WRITE, 512, data=b"abc", cookie=9), w.request(1, 9, 512, 3, data=b"abc")),
    (Request(NBD_CMD_FLUSH, cookie=10), w.request(3, 10)),
    (Request(NBD_CMD_TRIM, 0, 1 << 20, NBD_CMD_FLAG_FUA, cookie=11),
     w.request(4, 11, 0, 1 << 20, flags=1)),
    (Request(NBD_CMD_CACHE, 0, 4096, cookie=12), w.request(5, 12, 0, 4096)),
    (Request(NBD_CMD_WRITE_ZEROES, 0, 4096, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO,
             cookie=13), w.request(6, 13, 0, 4096, flags=2 | 16)),
    (Request(NBD_CMD_BLOCK_STATUS, 0, 1 << 20, NBD_CMD_FLAG_REQ_ONE, cookie=2**64 - 1),
     w.request(7, 2**64 - 1, 0, 1 << 20, flags=8)),
    (Request(NBD_CMD_DISC, cookie=14), w.request(2, 14)),
])
@pytest.mark.parametrize("extended", [False, True])
def test_request_wire_vectors(request_: Request, expected: bytes, extended: bool) -> None:
    tx = ClientTransmission(export(extended=extended, contexts=CTX))
    assert tx.send(request_) == request_.cookie
    if extended:
        expected = w.ext_request(*_fields(expected))
    assert tx.data_to_send() == expected
    assert tx.data_to_send() == b""


def _fields(simple: bytes) -> tuple[int, int, int, int, int, bytes]:
    import struct
    _, flags, cmd, cookie, offset, length = struct.unpack(">IHHQQI", simple[:28])
    return cmd, cookie, offset, length, flags, simple[28:]


def test_auto_cookies_skip_ones_in_flight() -> None:
    tx = ClientTransmission(export())
    tx.send(Request(NBD_CMD_READ, 0, 512, cookie=2))
    assert [tx.send(Request(NBD_CMD_READ, 0, 512)) for _ in range(3)] == [1, 3, 4]
    assert sorted(tx.in_flight) == [1, 2, 3, 4]
    assert tx.in_flight[3].cookie == 3 and tx.in_flight[3].command == NBD_CMD_READ


def test_write_keeps_payload_for_replay_and_sets_length() -> None:
    tx = ClientTransmission(export())
    payload = memoryview(b"x" * 4096)
    cookie = tx.send(Request(NBD_CMD_WRITE, 0, data=payload))
    assert tx.in_flight[cookie].length == 4096
    assert tx.in_flight[cookie].data is payload
    assert tx.data_to_send() == w.request(1, cookie, 0, 4096, data=b"x" * 4096)


def test_disc_is_not_in_flight_and_ends_sending() -> None:
    tx = ClientTransmission(export())
    tx.send(Request(NBD_CMD_DISC))
    assert not tx.in_flight
    with pytest.raises(LocalProtocolError, match="follow NBD_CMD_DISC"):
        tx.send(Request(NBD_CMD_READ, 0, 512))


def ro_export(**kw: object) -> ExportInfo:
    return export(flags=w.F_HAS_FLAGS | w.F_READ_ONLY, **kw)  # type: ignore[arg-type]


INVALID = [
    ("unknown command", export(), Request(42, 0, 512), "unsupported command"),
    ("resize", export(), Request(8, 0, 512), "unsupported command"),
    ("negative cookie", export(), Request(NBD_CMD_READ, 0, 512, cookie=-1), "64-bit"),
    ("huge cookie", export(), Request(NBD_CMD_READ, 0, 512, cookie=2**64), "64-bit"),
    ("zero length", export(), Request(NBD_CMD_READ, 0, 0), "length > 0"),
    ("negative offset", export(), Request(NBD_CMD_READ, -512, 512), "offset >= 0"),
    ("past the end", export(size=4096), Request(NBD_CMD_READ, 3584, 1024), "past the end"),
    ("unaligned offset", export(minimum=512), Request(NBD_CMD_READ, 100, 512), "multiples"),
    ("unaligned length", export(minimum=512), Request(NBD_CMD_READ, 0, 100), "multiples"),
    ("over max block", export(size=1 << 30, maximum=1 << 20),
     Request(NBD_CMD_READ, 0, 2 << 20), "maximum block size"),
    ("write over max block", export(size=1 << 30, maximum=4096),
     Request(NBD_CMD_WRITE, 0, data=bytes(8192)), "maximum block size"),
    ("read over 4 GiB without extended headers", export(size=1 << 40, maximum=0xFFFFFFFF),
     Request(NBD_CMD_TRIM, 0, 1 << 33), "does not fit"),
    ("write on read-only", ro_export(), Request(NBD_CMD_WRITE, 0, data=b"x"), "read-only"),
    ("trim on read-only", ro_export(), Request(NBD_CMD_TRIM, 0, 512), "read-only"),
    ("zeroes on read-only", ro_export(), Request(NBD_CMD_WRITE_ZEROES, 0, 512), "read-only"),
    ("flush unsupported", ro_export(), Request(NBD_CMD_FLUSH), "NBD_CMD_FLUSH"),
    ("trim unsupported", export(flags=1), Request(NBD_CMD_TRIM, 0, 512), "NBD_CMD_TRIM"),
    ("zeroes unsupported", export(flags=1), Request(NBD_CMD_WRITE_ZEROES, 0, 512),
     "NBD_CMD_WRITE_ZEROES"),
    ("cache unsupported", export(flags=1), Request(NBD_CMD_CACHE, 0, 512), "NBD_CMD_CACHE"),
    ("fua unsupported", export(flags=1), Request(NBD_CMD_READ, 0, 512, NBD_CMD_FLAG_FUA), "FUA"),
    ("df unsupported", export(flags=1), Request(NBD_CMD_READ, 0, 512, NBD_CMD_FLAG_DF), "DF"),
    ("df without structured replies", export(structured=False),
     Request(NBD_CMD_READ, 0, 512, NBD_CMD_FLAG_DF), "DF"),
    ("fast zero unsupported", export(flags=w.F_HAS_FLAGS | w.F_WRITE_ZEROES),
     Request(NBD_CMD_WRITE_ZEROES, 0, 512, NBD_CMD_FLAG_FAST_ZERO), "FAST_ZERO"),
    ("no hole on read", export(), Request(NBD_CMD_READ, 0, 512, NBD_CMD_FLAG_NO_HOLE),
     "not valid for NBD_CMD_READ"),
    ("req one on read", export(), Request(NBD_CMD_READ, 0, 512, NBD_CMD_FLAG_REQ_ONE),
     "not valid"),
    ("unknown flag", export(), Request(NBD_CMD_READ, 0, 512, 1 << 9), "not valid"),
    ("payload len flag", export(extended=True), Request(NBD_CMD_READ, 0, 512, 1 << 5),
     "not valid"),
    ("block status without contexts", export(), Request(NBD_CMD_BLOCK_STATUS, 0, 512),
     "no metadata context"),
    ("block status without structured replies", export(structured=False, contexts=CTX),
     Request(NBD_CMD_BLOCK_STATUS, 0, 512), "no metadata context"),
    ("write without data", export(), Request(NBD_CMD_WRITE, 0, 512), "needs data"),
    ("write length mismatch", export(), Request(NBD_CMD_WRITE, 0, 10, data=b"abc"),
     "length 10 but 3"),
    ("read with data", export(), Request(NBD_CMD_READ, 0, 3, data=b"abc"), "carries no data"),
    ("flush with length", export(), Request(NBD_CMD_FLUSH, 0, 512), "offset and length 0"),
    ("disc with offset", export(), Request(NBD_CMD_DISC, 512), "offset and length 0"),
    ("disc with flags", export(), Request(NBD_CMD_DISC, flags=NBD_CMD_FLAG_FUA), "not valid"),
]


@pytest.mark.parametrize(("why", "info", "req", "match"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_requests(why: str, info: ExportInfo, req: Request, match: str) -> None:
    tx = ClientTransmission(info)
    with pytest.raises(LocalProtocolError, match=match):
        tx.check(req)
    tx.check(Request(NBD_CMD_READ, 0, info.min_block_size))  # check() left it usable
    with pytest.raises(LocalProtocolError, match=match):
        tx.send(req)
    assert tx.data_to_send() == b""
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        tx.send(Request(NBD_CMD_READ, 0, info.min_block_size))


def test_cookie_in_flight_is_refused() -> None:
    tx = ClientTransmission(export())
    tx.send(Request(NBD_CMD_READ, 0, 512, cookie=5))
    with pytest.raises(LocalProtocolError, match="already in flight"):
        tx.check(Request(NBD_CMD_READ, 0, 512, cookie=5))


def test_fast_zero_is_exempt_from_max_block_size() -> None:
    tx = ClientTransmission(export(size=1 << 30, maximum=4096))
    tx.check(Request(NBD_CMD_WRITE_ZEROES, 0, 1 << 30, NBD_CMD_FLAG_FAST_ZERO))
    tx.check(Request(NBD_CMD_TRIM, 0, 1 << 30))


def test_extended_headers_allow_64_bit_lengths() -> None:
    tx = ClientTransmission(export(size=1 << 40, extended=True, maximum=0xFFFFFFFF))
    cookie = tx.send(Request(NBD_CMD_TRIM, 0, 1 << 33))
    assert tx.data_to_send() == w.ext_request(4, cookie, 0, 1 << 33)


# ------------------------------------------------------------------ simple replies


def simple_tx() -> ClientTransmission:
    return ClientTransmission(export(structured=False))


def test_simple_read_reply_split_anywhere() -> None:
    tx = simple_tx()
    c = tx.send(Request(NBD_CMD_READ, 512, 1024))
    stream = w.simple(c, 0, bytes(range(256)) * 4)
    for cut in (0, 1, 15, 16, 17, 1039):
        tx2 = simple_tx()
        tx2.send(Request(NBD_CMD_READ, 512, 1024))
        assert drain(tx2, stream[:cut]) == []
        events = drain(tx2, stream[cut:])
        assert events == [ReadData(c, 512, bytes(range(256)) * 4),
                          ReplyDone(c, NBD_CMD_READ)]
    assert drain(tx, stream)[1].ok


def test_simple_read_error_has_no_payload() -> None:
    tx = simple_tx()
    c1 = tx.send(Request(NBD_CMD_READ, 0, 1024))
    c2 = tx.send(Request(NBD_CMD_WRITE, 0, data=b"x" * 512))
    events = drain(tx, w.simple(c1, 5) + w.simple(c2, 28))
    assert events == [ReplyDone(c1, NBD_CMD_READ, errno.EIO),
                      ReplyDone(c2, NBD_CMD_WRITE, errno.ENOSPC)]
    assert not events[0].ok


def test_out_of_order_replies() -> None:
    tx = simple_tx()
    cookies = [tx.send(Request(NBD_CMD_READ, i * 512, 512)) for i in range(4)]
    stream = b"".join(w.simple(c, 0, bytes([c]) * 512) for c in reversed(cookies))
    events = drain(tx, stream)
    assert [e.cookie for e in events if isinstance(e, ReplyDone)] == cookies[::-1]
    assert all(e.data == bytes([e.cookie]) * 512 for e in events if isinstance(e, ReadData))
    assert not tx.in_flight


def test_unknown_simple_error_value_means_einval() -> None:
    tx = simple_tx()
    c = tx.send(Request(NBD_CMD_FLUSH))
    assert drain(tx, w.simple(c, 4242)) == [ReplyDone(c, NBD_CMD_FLUSH, errno.EINVAL)]


# ------------------------------------------------------------------ structured replies


def sr_tx(**kw: object) -> ClientTransmission:
    return ClientTransmission(export(contexts=CTX, **kw))  # type: ignore[arg-type]


def test_structured_read_out_of_order_chunks_and_holes() -> None:
    tx = sr_tx()
    c = tx.send(Request(NBD_CMD_READ, 4096, 4096))
    events = drain(tx, w.chunk(c, w.T_DATA, w.data_payload(6144, b"b" * 2048))
                   + w.chunk(c, w.T_HOLE, w.hole_payload(5120, 1024))
                   + w.chunk(c, w.T_DATA, w.data_payload(4096, b"a" * 1024), flags=w.DONE))
    assert events == [ReadData(c, 6144, b"b" * 2048), ReadHole(c, 5120, 1024),
                      ReadData(c, 4096, b"a" * 1024), ReplyDone(c, NBD_CMD_READ)]


def test_structured_read_assembled() -> None:
    tx = ClientTransmission(export(contexts=CTX), assemble_reads=True)
    c = tx.send(Request(NBD_CMD_READ, 4096, 4096))
    events = drain(tx, w.chunk(c, w.T_DATA, w.data_payload(6144, b"b" * 2048))
                   + w.chunk(c, w.T_HOLE, w.hole_payload(5120, 1024))
                   + w.chunk(c, w.T_DATA, w.data_payload(4096, b"a" * 1024))
                   + w.chunk(c, w.T_NONE, flags=w.DONE))
    assert events == [ReadData(c, 4096, b"a" * 1024 + bytes(1024) + b"b" * 2048),
                      ReplyDone(c, NBD_CMD_READ)]


@pytest.mark.parametrize(("chunks", "expected"), [
    ([(w.T_DATA, w.data_payload(0, b"z" * 512))], b"z" * 512),
    ([(w.T_HOLE, w.hole_payload(0, 512))], bytes(512)),
    ([(w.T_HOLE, w.hole_payload(256, 256)), (w.T_HOLE, w.hole_payload(0, 256))], bytes(512)),
])
def test_assembled_single_chunk_shapes(chunks: list[tuple[int, bytes]], expected: bytes) -> None:
    tx = ClientTransmission(export(), assemble_reads=True)
    c = tx.send(Request(NBD_CMD_READ, 0, 512))
    stream = b"".join(w.chunk(c, t, p) for t, p in chunks) + w.chunk(c, w.T_NONE, flags=w.DONE)
    assert drain(tx, stream) == [ReadData(c, 0, expected), ReplyDone(c, NBD_CMD_READ)]


def test_assembled_read_error_delivers_no_data() -> None:
    tx = ClientTransmission(export(), assemble_reads=True)
    c = tx.send(Request(NBD_CMD_READ, 0, 1024))
    events = drain(tx, w.chunk(c, w.T_DATA, w.data_payload(0, b"q" * 512))
                   + w.chunk(c, w.T_ERROR_OFFSET, w.error_payload(5, "bad sector", 512),
                             flags=w.DONE))
    assert events == [ErrorChunk(c, errno.EIO, "bad sector", 512),
                      ReplyDone(c, NBD_CMD_READ, errno.EIO, "bad sector", 512)]


def test_error_chunks_first_error_wins() -> None:
    tx = sr_tx()
    c = tx.send(Request(NBD_CMD_WRITE, 0, data=b"x" * 512))
    events = drain(tx, w.chunk(c, w.T_ERROR, w.error_payload(28, "disk full"))
                   + w.chunk(c, w.T_ERROR, w.error_payload(1, "later"), flags=w.DONE))
    assert events[-1] == ReplyDone(c, NBD_CMD_WRITE, errno.ENOSPC, "disk full")
    assert events[1] == ErrorChunk(c, errno.EPERM, "later")


def test_unknown_error_chunk_type_is_an_error_not_a_disconnect() -> None:
    tx = sr_tx()
    c = tx.send(Request(NBD_CMD_FLUSH))
    events = drain(tx, w.chunk(c, (1 << 15) + 100, w.error_payload(22, "hm") + b"extra",
                               flags=w.DONE))
    assert events == [ErrorChunk(c, errno.EINVAL, "hm"),
                      ReplyDone(c, NBD_CMD_FLUSH, errno.EINVAL, "hm")]


def test_simple_reply_allowed_for_non_read_with_structured() -> None:
    tx = sr_tx()
    c = tx.send(Request(NBD_CMD_FLUSH))
    c2 = tx.send(Request(NBD_CMD_BLOCK_STATUS, 0, 512))
    assert drain(tx, w.simple(c) + w.simple(c2, 22)) == [
        ReplyDone(c, NBD_CMD_FLUSH), ReplyDone(c2, NBD_CMD_BLOCK_STATUS, errno.EINVAL)]


def test_block_status_two_contexts() -> None:
    tx = sr_tx()
    c = tx.send(Request(NBD_CMD_BLOCK_STATUS, 0, 1 << 20))
    events = drain(tx, w.chunk(c, w.T_BS, w.bs_payload(2, [(1 << 20, 0)]))
                   + w.chunk(c, w.T_BS, w.bs_payload(1, [(4096, 0), (1 << 21, 3)]),
                             flags=w.DONE))
    assert events == [
        BlockStatus(c, 2, "qemu:dirty-bitmap:b", Extents.of([Extent(1 << 20, 0)])),
        BlockStatus(c, 1, "base:allocation", Extents.of([Extent(4096, 0), Extent(1 << 21, 3)])),
        ReplyDone(c, NBD_CMD_BLOCK_STATUS),
    ]


def test_block_status_req_one() -> None:
    tx = ClientTransmission(export(contexts={"base:allocation": 5}))
    c = tx.send(Request(NBD_CMD_BLOCK_STATUS, 0, 8192, NBD_CMD_FLAG_REQ_ONE))
    events = drain(tx, w.chunk(c, w.T_BS, w.bs_payload(5, [(4096, 2)]), flags=w.DONE))
    assert events[0] == BlockStatus(c, 5, "base:allocation", Extents.of([Extent(4096, 2)]))


# ------------------------------------------------------------------ extended headers


def ext_tx(**kw: object) -> ClientTransmission:
    return ClientTransmission(export(extended=True, contexts=CTX), **kw)  # type: ignore[arg-type]


def test_extended_read_and_block_status() -> None:
    tx = ext_tx()
    c = tx.send(Request(NBD_CMD_READ, 0, 2048))
    b = tx.send(Request(NBD_CMD_BLOCK_STATUS, 0, 2048))
    f = tx.send(Request(NBD_CMD_FLUSH))
    events = drain(tx, w.ext_chunk(c, w.T_DATA, w.data_payload(0, b"d" * 1024))
                   + w.ext_chunk(c, w.T_HOLE, w.hole_payload(1024, 1024), flags=w.DONE)
                   + w.ext_chunk(b, w.T_BS_EXT, w.bs_ext_payload(1, [(2**40, 3)]))
                   + w.ext_chunk(b, w.T_BS_EXT, w.bs_ext_payload(2, [(2048, 1)]),
                                 flags=w.DONE)
                   + w.ext_chunk(f, w.T_NONE, flags=w.DONE))
    assert events == [
        ReadData(c, 0, b"d" * 1024), ReadHole(c, 1024, 1024), ReplyDone(c, NBD_CMD_READ),
        BlockStatus(b, 1, "base:allocation", Extents.of([Extent(2**40, 3)])),
        BlockStatus(b, 2, "qemu:dirty-bitmap:b", Extents.of([Extent(2048, 1)])),
        ReplyDone(b, NBD_CMD_BLOCK_STATUS), ReplyDone(f, NBD_CMD_FLUSH),
    ]


def test_extended_hole_with_64_bit_size() -> None:
    import struct
    tx = ext_tx()
    c = tx.send(Request(NBD_CMD_READ, 0, 4096))
    events = drain(tx, w.ext_chunk(c, w.T_HOLE, struct.pack(">QQ", 0, 4096), flags=w.DONE))
    assert events == [ReadHole(c, 0, 4096), ReplyDone(c, NBD_CMD_READ)]


# ------------------------------------------------------------------ EOF


def test_eof_with_nothing_in_flight() -> None:
    tx = sr_tx()
    assert drain(tx, eof=True) == [ConnectionClosed()]
    assert tx.closed
    with pytest.raises(LocalProtocolError):
        tx.next_event()


def test_eof_with_requests_in_flight() -> None:
    tx = sr_tx()
    tx.send(Request(NBD_CMD_READ, 0, 512))
    with pytest.raises(ProtocolError, match="1 request\\(s\\) in flight"):
        drain(tx, eof=True)


def test_eof_mid_reply() -> None:
    tx = simple_tx()
    c = tx.send(Request(NBD_CMD_READ, 0, 512))
    with pytest.raises(ProtocolError, match="middle of a reply"):
        drain(tx, w.simple(c, 0, b"x" * 100), eof=True)


def test_need_data_until_complete() -> None:
    tx = sr_tx()
    c = tx.send(Request(NBD_CMD_READ, 0, 512))
    stream = w.chunk(c, w.T_DATA, w.data_payload(0, b"y" * 512), flags=w.DONE)
    for byte in stream[:-1]:
        tx.receive_data(bytes([byte]))
        assert tx.next_event() is NEED_DATA
    assert drain(tx, stream[-1:]) == [ReadData(c, 0, b"y" * 512), ReplyDone(c, NBD_CMD_READ)]


# ------------------------------------------------------------------ hostile replies

# In flight for every case below (structured replies, CTX negotiated):
#   1: READ [4096, +8192)    2: BLOCK_STATUS [0, +65536)    3: WRITE [0, +512)
#   4: FLUSH                 5: READ [0, +4096) with DF      6: BLOCK_STATUS REQ_ONE [0, +4096)


def hostile_tx() -> ClientTransmission:
    tx = ClientTransmission(export(contexts=CTX))
    tx.send(Request(NBD_CMD_READ, 4096, 8192, cookie=1))
    tx.send(Request(NBD_CMD_BLOCK_STATUS, 0, 65536, cookie=2))
    tx.send(Request(NBD_CMD_WRITE, 0, data=bytes(512), cookie=3))
    tx.send(Request(NBD_CMD_FLUSH, cookie=4))
    tx.send(Request(NBD_CMD_READ, 0, 4096, NBD_CMD_FLAG_DF, cookie=5))
    tx.send(Request(NBD_CMD_BLOCK_STATUS, 0, 4096, NBD_CMD_FLAG_REQ_ONE, cookie=6))
    return tx


D, H, BS = w.data_payload, w.hole_payload, w.bs_payload
HOSTILE = [
    ("bad magic", b"\xde\xad\xbe\xef" + bytes(16), "bad reply magic"),
    ("unknown cookie", w.chunk(99, w.T_NONE, flags=w.DONE), "cookie 99"),
    ("reply after done", w.chunk(4, w.T_NONE, flags=w.DONE) + w.simple(4), "cookie 4"),
    ("data before request", w.chunk(1, w.T_DATA, D(0, b"x")), "outside"),
    ("data past request", w.chunk(1, w.T_DATA, D(12287, b"xx")), "outside"),
    ("hole past request", w.chunk(1, w.T_HOLE, H(12288, 1)), "outside"),
    ("overlapping data", w.chunk(1, w.T_DATA, D(4096, b"x" * 10))
     + w.chunk(1, w.T_DATA, D(4100, b"x")), "overlaps"),
    ("hole overlapping data", w.chunk(1, w.T_DATA, D(8192, b"x" * 10))
     + w.chunk(1, w.T_HOLE, H(4096, 4097)), "overlaps"),
    ("missing coverage", w.chunk(1, w.T_DATA, D(4096, b"x" * 8191), flags=w.DONE),
     "covers only 8191 of 8192"),
    ("done without any data", w.chunk(1, w.T_NONE, flags=w.DONE), "covers only 0"),
    ("data chunk too short", w.chunk(1, w.T_DATA, D(4096, b"")), "at least 9"),
    ("data chunk longer than request", w.chunk(1, w.T_DATA, D(4096, b"x" * 8193)), "too long"),
    ("lying length, no payload", w.chunk(1, w.T_DATA, length=2**32 - 1), "too long"),
    ("hole wrong size", w.chunk(1, w.T_HOLE, H(4096, 1)[:-1]), "must be 12"),
    ("hole of 0", w.chunk(1, w.T_HOLE, H(4096, 0)), "size 0"),
    ("data for a write", w.chunk(3, w.T_DATA, D(0, b"x")),
     "data chunk in the reply to NBD_CMD_WRITE"),
    ("hole for block status", w.chunk(2, w.T_HOLE, H(0, 1)), "hole chunk in the reply"),
    ("block status for read", w.chunk(1, w.T_BS, BS(1, [(1, 0)])), "NBD_CMD_READ"),
    ("block status unknown context", w.chunk(2, w.T_BS, BS(9, [(512, 0)])), "id 9"),
    ("block status twice", w.chunk(2, w.T_BS, BS(1, [(512, 0)]))
     + w.chunk(2, w.T_BS, BS(1, [(512, 0)])), "two block status chunks"),
    ("block status missing context", w.chunk(2, w.T_BS, BS(1, [(512, 0)]), flags=w.DONE),
     "lacks block status for qemu:dirty-bitmap:b"),
    ("block status ragged", w.chunk(2, w.T_BS, BS(1, [(512, 0)]) + b"\0"), "whole extents"),
    ("block status no extents", w.chunk(2, w.T_BS, BS(1, [])), "whole extents"),
    ("block status zero extent", w.chunk(2, w.T_BS, BS(1, [(0, 0)])), "length 0"),
    ("block status past the end", w.chunk(2, w.T_BS, BS(1, [(65536, 0), (512, 0)])),
     "past the end"),
    ("req one broken: two extents", w.chunk(6, w.T_BS, BS(1, [(512, 0), (512, 1)])), "REQ_ONE"),
    ("req one broken: too long", w.chunk(6, w.T_BS, BS(1, [(8192, 0)])), "REQ_ONE"),
    ("block status ext without extended headers", w.chunk(2, w.T_BS_EXT,
                                                          w.bs_ext_payload(1, [(512, 0)])),
     "not negotiated"),
    ("df broken", w.chunk(5, w.T_DATA, D(0, b"x" * 512))
     + w.chunk(5, w.T_DATA, D(512, b"x" * 512)), "NBD_CMD_FLAG_DF"),
    ("none without done", w.chunk(4, w.T_NONE), "without NBD_REPLY_FLAG_DONE"),
    ("none with payload", w.chunk(4, w.T_NONE, b"x", flags=w.DONE), "payload"),
    ("unknown type", w.chunk(4, 77, flags=w.DONE), "unknown structured reply type 77"),
    ("error zero", w.chunk(4, w.T_ERROR, w.error_payload(0)), "error 0"),
    ("error too short", w.chunk(4, w.T_ERROR, b"\0\0\0\x05\0"), "at least 6"),
    ("error message overruns", w.chunk(4, w.T_ERROR, w.error_payload(5, "abc")[:-1]),
     "3-byte message"),
    ("unknown error type overruns", w.chunk(4, (1 << 15) + 9, w.error_payload(5, "abc")[:-1]),
     "longer than its payload"),
    ("error offset for flush", w.chunk(4, w.T_ERROR_OFFSET, w.error_payload(5, "", 0)),
     "ERROR_OFFSET in the reply to NBD_CMD_FLUSH"),
    ("error offset outside", w.chunk(1, w.T_ERROR_OFFSET, w.error_payload(5, "", 100)),
     "outside"),
    ("error offset wrong length", w.chunk(1, w.T_ERROR_OFFSET, w.error_payload(5, "")),
     "ERROR_OFFSET of 6"),
    ("error message too long", w.chunk(4, w.T_ERROR, w.error_payload(5, "m" * 5000)),
     "limit 4096"),
    ("simple reply to read", w.simple(1, 0, bytes(8192)), "simple reply to NBD_CMD_READ"),
    ("successful simple reply to block status", w.simple(2), "needs a structured reply"),
    ("extended header not negotiated", w.ext_chunk(4, w.T_NONE, flags=w.DONE),
     "extended reply header"),
]


@pytest.mark.parametrize(("why", "stream", "match"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_replies(why: str, stream: bytes, match: str) -> None:
    tx = hostile_tx()
    with pytest.raises(ProtocolError, match=match):
        drain(tx, stream)
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        tx.next_event()
    with pytest.raises(LocalProtocolError):
        tx.send(Request(NBD_CMD_READ, 0, 512))


SIMPLE_ONLY = [
    ("structured reply not negotiated", w.chunk(1, w.T_NONE, flags=w.DONE), "not negotiated"),
]
EXTENDED_ONLY = [
    ("simple reply with extended headers", w.simple(1), "simple reply although extended"),
    ("structured reply with extended headers", w.chunk(1, w.T_NONE, flags=w.DONE),
     "extended headers were negotiated"),
    ("block status (narrow) with extended headers",
     w.ext_chunk(2, w.T_BS, w.bs_payload(1, [(1, 0)])), "BLOCK_STATUS chunk although"),
    ("block status ext count lies", w.ext_chunk(2, w.T_BS_EXT, w.bs_ext_payload(1, [(1, 0)])[:4]
                                                + b"\0\0\0\x02" + bytes(16)), "claims 2"),
    ("hole of 13 bytes", w.ext_chunk(1, w.T_HOLE, bytes(13)), "must be 12"),
]


@pytest.mark.parametrize(("why", "stream", "match"), SIMPLE_ONLY, ids=[c[0] for c in SIMPLE_ONLY])
def test_hostile_replies_simple_mode(why: str, stream: bytes, match: str) -> None:
    tx = ClientTransmission(export(structured=False))
    tx.send(Request(NBD_CMD_FLUSH, cookie=1))
    with pytest.raises(ProtocolError, match=match):
        drain(tx, stream)


@pytest.mark.parametrize(("why", "stream", "match"), EXTENDED_ONLY,
                         ids=[c[0] for c in EXTENDED_ONLY])
def test_hostile_replies_extended_mode(why: str, stream: bytes, match: str) -> None:
    tx = ext_tx()
    tx.send(Request(NBD_CMD_READ, 0, 512, cookie=1))
    tx.send(Request(NBD_CMD_BLOCK_STATUS, 0, 512, cookie=2))
    with pytest.raises(ProtocolError, match=match):
        drain(tx, stream)


def test_lengths_over_the_request_are_rejected_before_buffering() -> None:
    tx = hostile_tx()
    # a header claiming 4 GiB for an 8 KiB read: refused from the 20-byte header alone
    with pytest.raises(ProtocolError, match="too long"):
        drain(tx, w.chunk(1, w.T_DATA, length=2**32 - 1))


def test_extended_lengths_over_the_request_are_rejected() -> None:
    tx = ext_tx()
    tx.send(Request(NBD_CMD_READ, 0, 512, cookie=1))
    with pytest.raises(ProtocolError, match="too long"):
        drain(tx, w.ext_chunk(1, w.T_DATA, length=2**63))
