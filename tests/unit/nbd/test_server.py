"""ServerTransmission on its own (wire vectors) and paired with ClientTransmission."""

from __future__ import annotations

import errno

import pytest

from appliance.errors import LocalProtocolError, ProtocolError
from appliance.nbd import (
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_DISC,
    NBD_CMD_FLAG_FUA,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_TRIM,
    NBD_CMD_WRITE,
    NEED_DATA,
    BlockStatus,
    ConnectionClosed,
    ErrorChunk,
    Extent,
    Extents,
    ReadData,
    ReadHole,
    ReplyDone,
    Request,
    ServerTransmission,
)
from tests.unit.nbd import wire as w
from tests.unit.nbd.wire import Pair, export


def events(srv: ServerTransmission, data: bytes = b"", eof: bool = False) -> list[object]:
    if data:
        srv.receive_data(data)
    if eof:
        srv.receive_data(b"")
    out: list[object] = []
    while (ev := srv.next_event()) is not NEED_DATA:
        out.append(ev)
        if isinstance(ev, ConnectionClosed):
            break
    return out


# ------------------------------------------------------------------ parsing requests


def test_parses_kernel_style_simple_requests() -> None:
    srv = ServerTransmission()
    stream = (w.request(0, 0xAABB, 4096, 512) + w.request(1, 7, 0, 3, flags=1, data=b"abc")
              + w.request(3, 8) + w.request(2, 9))
    got = events(srv, stream)
    assert got == [Request(NBD_CMD_READ, 4096, 512, 0, 0xAABB),
                   Request(NBD_CMD_WRITE, 0, 3, NBD_CMD_FLAG_FUA, 7, b"abc"),
                   Request(NBD_CMD_FLUSH, 0, 0, 0, 8),
                   Request(NBD_CMD_DISC, 0, 0, 0, 9)]
    assert sorted(srv.in_flight) == [7, 8, 0xAABB]  # DISC is never answered
    assert events(srv, eof=True) == [ConnectionClosed()]


def test_parses_byte_by_byte() -> None:
    srv = ServerTransmission()
    stream = w.request(1, 5, 0, 600, data=bytes(range(200)) * 3)
    for b in stream[:-1]:
        assert events(srv, bytes([b])) == []
    [req] = events(srv, stream[-1:])
    assert isinstance(req, Request) and req.data == bytes(range(200)) * 3


def test_parses_extended_requests() -> None:
    srv = ServerTransmission(extended_headers=True)
    got = events(srv, w.ext_request(4, 1, 0, 1 << 40) + w.ext_request(1, 2, 8, 2, data=b"hi"))
    assert got == [Request(NBD_CMD_TRIM, 0, 1 << 40, 0, 1),
                   Request(NBD_CMD_WRITE, 8, 2, 0, 2, b"hi")]


@pytest.mark.parametrize(("kwargs", "stream", "match"), [
    ({}, b"\x12\x34\x56\x78" + bytes(24), "bad request magic"),
    ({}, w.ext_request(0, 1, 0, 512), "bad request magic"),
    ({"extended_headers": True}, w.request(0, 1, 0, 512), "bad request magic"),
    ({"max_payload": 1024}, w.request(1, 1, 0, 1025), "exceeds the limit"),
    ({}, w.request(0, 1, 0, 512) + w.request(0, 1, 0, 512), "reused cookie 1"),
    ({}, w.request(2, 1) + w.request(0, 2, 0, 512), "after NBD_CMD_DISC"),
    ({"extended_headers": True}, w.ext_request(7, 1, 0, 512, flags=32), "PAYLOAD_LEN"),
])
def test_hostile_requests(kwargs: dict[str, object], stream: bytes, match: str) -> None:
    srv = ServerTransmission(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match=match):
        events(srv, stream)
    with pytest.raises(LocalProtocolError):
        srv.next_event()


def test_eof_mid_request() -> None:
    srv = ServerTransmission()
    with pytest.raises(ProtocolError, match="middle of a request"):
        events(srv, w.request(1, 1, 0, 10, data=b"abc"), eof=True)


# ------------------------------------------------------------------ building replies


def test_simple_replies_wire() -> None:
    srv = ServerTransmission()
    events(srv, w.request(0, 1, 0, 4) + w.request(3, 2) + w.request(0, 3, 0, 4))
    srv.reply(1, data=b"abcd")
    srv.reply(2, error=errno.ENOSPC)
    srv.reply(3, error=errno.EIO)
    assert srv.data_to_send() == (w.simple(1, 0, b"abcd") + w.simple(2, 28) + w.simple(3, 5))
    assert not srv.in_flight


def test_structured_replies_wire() -> None:
    srv = ServerTransmission(structured_replies=True)
    events(srv, w.request(0, 1, 0, 1024) + w.request(7, 2, 0, 4096) + w.request(3, 3)
           + w.request(1, 4, 0, 1, data=b"x") + w.request(0, 5, 0, 8))
    srv.reply_data(1, 0, b"a" * 512)
    srv.reply_hole(1, 512, 512)
    srv.reply_done(1)
    srv.reply_block_status(2, 1, [Extent(4096, 3)], done=True)
    srv.reply(3)
    srv.reply_error(4, errno.EPERM, "read-only", offset=0)
    srv.reply(5, data=b"12345678")
    assert srv.data_to_send() == (
        w.chunk(1, w.T_DATA, w.data_payload(0, b"a" * 512))
        + w.chunk(1, w.T_HOLE, w.hole_payload(512, 512))
        + w.chunk(1, w.T_NONE, flags=w.DONE)
        + w.chunk(2, w.T_BS, w.bs_payload(1, [(4096, 3)]), flags=w.DONE)
        + w.simple(3)
        + w.chunk(4, w.T_ERROR_OFFSET, w.error_payload(1, "read-only", 0), flags=w.DONE)
        + w.chunk(5, w.T_DATA, w.data_payload(0, b"12345678"), flags=w.DONE))


def test_extended_replies_wire() -> None:
    srv = ServerTransmission(extended_headers=True)
    events(srv, w.ext_request(0, 1, 512, 8) + w.ext_request(7, 2, 0, 4096)
           + w.ext_request(3, 3))
    srv.reply(1, data=b"12345678")
    srv.reply_block_status(2, 4, [Extent(1 << 40, 1)], done=True)
    srv.reply(3)
    assert srv.data_to_send() == (
        w.ext_chunk(1, w.T_DATA, w.data_payload(512, b"12345678"), flags=w.DONE, offset=512)
        + w.ext_chunk(2, w.T_BS_EXT, w.bs_ext_payload(4, [(1 << 40, 1)]), flags=w.DONE)
        + w.ext_chunk(3, w.T_NONE, flags=w.DONE))


@pytest.mark.parametrize(("structured", "action", "match"), [
    (False, lambda s: s.reply(99), "no request with cookie 99"),
    (False, lambda s: s.reply(1, data=b"short"), "READ reply of 5 bytes"),
    (False, lambda s: s.reply(2, data=b"x"), "only a successful READ"),
    (False, lambda s: s.reply_data(1, 0, b"x"), "needs structured replies"),
    (True, lambda s: s.reply_data(1, 4000, b"x" * 200), "outside the request"),
    (True, lambda s: s.reply_hole(2, 0, 1), "answer NBD_CMD_READ only"),
    (True, lambda s: s.reply_block_status(1, 1, [Extent(1, 0)]), "NBD_CMD_BLOCK_STATUS only"),
    (True, lambda s: s.reply_block_status(3, 1, []), "at least one extent"),
    (True, lambda s: s.reply_error(1, 0), "non-zero error"),
    (True, lambda s: s.reply(3), "reply_block_status"),
])
def test_reply_misuse(structured: bool, action: object, match: str) -> None:
    srv = ServerTransmission(structured_replies=structured)
    events(srv, w.request(0, 1, 0, 4096) + w.request(3, 2) + w.request(7, 3, 0, 4096))
    with pytest.raises(LocalProtocolError, match=match):
        action(srv)  # type: ignore[operator]
    with pytest.raises(LocalProtocolError):
        srv.reply(2)


# ------------------------------------------------------------------ pairs


@pytest.mark.parametrize("mode", ["simple", "structured", "extended"])
def test_pair_round_trip(mode: str) -> None:
    info = export(structured=mode != "simple", extended=mode == "extended",
                  contexts={"base:allocation": 3} if mode != "simple" else None)
    pair = Pair(info)
    r = pair.client.send(Request(NBD_CMD_READ, 0, 4096))
    wr = pair.client.send(Request(NBD_CMD_WRITE, 4096, data=b"w" * 512))
    f = pair.client.send(Request(NBD_CMD_FLUSH, flags=NBD_CMD_FLAG_FUA))
    got = pair.to_server()
    assert [g.cookie for g in got] == [r, wr, f]  # type: ignore[attr-defined]
    assert got[1] == Request(NBD_CMD_WRITE, 4096, 512, 0, wr, b"w" * 512)
    pair.server.reply(f)
    pair.server.reply(wr, error=errno.ENOSPC)
    pair.server.reply(r, data=b"r" * 4096)
    assert pair.to_client() == [
        ReplyDone(f, NBD_CMD_FLUSH),
        *([ErrorChunk(wr, errno.ENOSPC)] if mode != "simple" else []),
        ReplyDone(wr, NBD_CMD_WRITE, errno.ENOSPC),
        ReadData(r, 0, b"r" * 4096),
        ReplyDone(r, NBD_CMD_READ),
    ]
    assert not pair.client.in_flight and not pair.server.in_flight


@pytest.mark.parametrize("extended", [False, True])
def test_pair_sparse_read_and_block_status(extended: bool) -> None:
    pair = Pair(export(extended=extended, contexts={"base:allocation": 1}))
    r = pair.client.send(Request(NBD_CMD_READ, 0, 3 * 512))
    b = pair.client.send(Request(NBD_CMD_BLOCK_STATUS, 0, 3 * 512))
    pair.to_server()
    pair.server.reply_hole(r, 512, 512)
    pair.server.reply_block_status(b, 1, [Extent(512, 0), Extent(1024, 3)], done=True)
    pair.server.reply_data(r, 1024, b"c" * 512)
    pair.server.reply_data(r, 0, b"a" * 512, done=True)
    assert pair.to_client() == [
        ReadHole(r, 512, 512),
        BlockStatus(b, 1, "base:allocation", Extents.of([Extent(512, 0), Extent(1024, 3)])),
        ReplyDone(b, NBD_CMD_BLOCK_STATUS),
        ReadData(r, 1024, b"c" * 512),
        ReadData(r, 0, b"a" * 512),
        ReplyDone(r, NBD_CMD_READ),
    ]


def test_pair_relay_replays_with_the_same_cookie() -> None:
    """The relay's pattern: the kernel's handle reused, a request replayed on a new pair."""
    info = export()
    first = Pair(info, assemble_reads=True)
    kernel_handle = 0x0102030405060708
    first.client.send(Request(NBD_CMD_READ, 0, 512, cookie=kernel_handle))
    first.to_server()
    lost = list(first.client.in_flight.values())  # connection dies here
    second = Pair(info, assemble_reads=True)
    for req in lost:
        second.client.send(req)
    [replayed] = second.to_server()
    assert replayed == Request(NBD_CMD_READ, 0, 512, 0, kernel_handle)
    second.server.reply_data(kernel_handle, 256, b"b" * 256)
    second.server.reply_data(kernel_handle, 0, b"a" * 256, done=True)
    assert second.to_client() == [ReadData(kernel_handle, 0, b"a" * 256 + b"b" * 256),
                                  ReplyDone(kernel_handle, NBD_CMD_READ)]


def test_pair_disconnect() -> None:
    pair = Pair(export())
    pair.client.send(Request(NBD_CMD_DISC))
    assert pair.to_server() == [Request(NBD_CMD_DISC, 0, 0, 0, 1)]
    assert pair.server.receive_data(b"") is None
    assert pair.server.next_event() == ConnectionClosed()
    pair.client.receive_data(b"")
    assert pair.client.next_event() == ConnectionClosed()
