"""The small parts: ReceiveBuffer, Ranges, ReadAssembler, event values."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.errors import LocalProtocolError
from appliance.nbd import NEED_DATA, ExportInfo, ReadData, ReadHole, Request
from appliance.nbd.buffer import ReceiveBuffer
from appliance.nbd.ranges import Ranges
from tests.unit.nbd.assemble import ReadAssembler


def test_buffer_feed_unpack_take() -> None:
    buf = ReceiveBuffer()
    layout = struct.Struct(">IH")
    assert buf.unpack(layout) is None
    buf.feed(b"\0\0\0\x01")
    assert buf.unpack(layout) is None
    buf.feed(memoryview(b"\0\x02rest"))
    assert buf.unpack(layout) == (1, 2)
    assert buf.unpack(struct.Struct(">H"), offset=4) == (2,)
    buf.skip(6)
    assert buf.has(4) and not buf.has(5)
    assert buf.peek(2) == b"re"
    assert buf.take(4) == b"rest"
    assert len(buf) == 0


def test_buffer_compacts_and_stays_linear() -> None:
    buf = ReceiveBuffer()
    piece = bytes(range(256)) * 64  # 16 KiB
    fed = taken = b""
    for _ in range(200):
        buf.feed(piece)
        fed += piece
        taken += buf.take(len(piece) - 1)
    assert fed.startswith(taken) and fed[len(taken):] == buf.take_all()
    # the consumed prefix was reused: storage is far below everything ever fed
    assert buf.capacity <= 256 * 1024 < len(fed)


@given(st.lists(st.binary(max_size=100), max_size=30), st.data())
def test_buffer_take_returns_fed_bytes(pieces: list[bytes], data: st.DataObject) -> None:
    buf = ReceiveBuffer()
    whole = b"".join(pieces)
    out = b""
    for piece in pieces:
        buf.feed(piece)
        n = data.draw(st.integers(0, len(buf)))
        out += buf.take(n)
    out += buf.take_all()
    assert out == whole


def test_ranges() -> None:
    r = Ranges()
    assert r.add(10, 20) and r.add(30, 40) and r.add(20, 30)
    assert len(r) == 1 and r.total == 30
    assert not r.add(15, 16) and not r.add(5, 11) and not r.add(39, 41)
    assert r.add(0, 10) and r.add(40, 41)
    assert len(r) == 1 and r.total == 41


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 20)), max_size=40))
def test_ranges_match_a_set_model(spans: list[tuple[int, int]]) -> None:
    r = Ranges()
    model: set[int] = set()
    for start, n in spans:
        cells = set(range(start, start + n))
        assert r.add(start, start + n) == (not cells & model)
        if not cells & model:
            model |= cells
    assert r.total == len(model)


def test_read_assembler() -> None:
    a = ReadAssembler(1000, 30)
    a.add(ReadData(1, 1010, b"b" * 10))
    a.add(ReadHole(1, 1000, 10))
    a.add(ReadData(1, 1020, b"c" * 10))
    assert a.filled == 30
    assert a.result() == bytes(10) + b"b" * 10 + b"c" * 10
    with pytest.raises(LocalProtocolError, match="outside"):
        a.add(ReadData(1, 999, b"x"))


def test_read_assembler_single_chunk_is_not_copied() -> None:
    payload = b"z" * 64
    a = ReadAssembler(0, 64)
    a.add(ReadData(1, 0, payload))
    assert a.result() is payload
    b = ReadAssembler(0, 64)
    b.add(ReadHole(1, 0, 64))
    assert b.result() == bytes(64)


def test_events_are_frozen_and_slotted() -> None:
    req = Request(0, 0, 512)
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.offset = 1  # type: ignore[misc]
    assert not hasattr(req, "__dict__")
    assert repr(NEED_DATA) == "NEED_DATA"
    assert "NBD_CMD_READ" in repr(req)
    assert "len=3" in repr(ReadData(1, 0, b"abc"))


def test_export_info_helpers() -> None:
    info = ExportInfo("x", 10, flags=1 | 2 | 128 | 256 | 1024 | 2048 | 16,
                      meta_contexts={"base:allocation": 4}, structured_replies=True)
    assert info.read_only and info.can_df and info.can_multi_conn and info.can_cache
    assert info.can_fast_zero and info.rotational and info.can_block_status
    assert info.context_name(4) == "base:allocation" and info.context_name(5) is None
    assert not dataclasses.replace(info, structured_replies=False).can_df
