"""Hypothesis properties of the core.

* Chunking: any split of a valid byte stream yields the same events.
* Fuzz rule: any input either parses or raises ProtocolError (negotiation: also
  OptionError, the server's refusal) -- never another exception -- and memory stays
  bounded by the input, not by lengths the peer claims.
* Reassembly: a READ split by the server into random data/hole chunks in random
  order comes out as the original bytes.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import tracemalloc

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.errors import OptionError, ProtocolError
from appliance.host.nbdserver import ServerExport, ServerNegotiation
from appliance.nbd import (
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_WRITE,
    NEED_DATA,
    ClientNegotiation,
    ClientTransmission,
    Extent,
    ReadData,
    Request,
    ServerTransmission,
)
from tests.unit.nbd import wire as w
from tests.unit.nbd.test_transmission import hostile_tx
from tests.unit.nbd.wire import Pair, drain, drain_negotiation, export

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return [p for p in pieces if p]


# ------------------------------------------------------------------ chunking


NEGOTIATION_STREAM = (
    w.greeting(3)
    + w.rep(w.OPT_EXTENDED_HEADERS, w.REP_ERR_UNSUP)
    + w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ACK)
    + w.rep(w.OPT_SET_META, w.REP_META_CONTEXT, w.meta_context(1, "base:allocation"))
    + w.rep(w.OPT_SET_META, w.REP_ACK)
    + w.rep(w.OPT_GO, w.REP_INFO, w.info_block_size(512, 4096, 1 << 25))
    + w.rep(w.OPT_GO, w.REP_INFO, w.info_export(1 << 30, 0x7FD))
    + w.rep(w.OPT_GO, w.REP_INFO, struct_info_unknown := b"\x00\x63abc")
    + w.rep(w.OPT_GO, w.REP_ACK)
)


def run_negotiation(pieces: list[bytes]) -> tuple[list[object], bytes]:
    neg = ClientNegotiation("disk", meta_contexts=["base:allocation"])
    events: list[object] = []
    sent = b""
    for piece in pieces:
        neg.receive_data(piece)
        while neg.state != "negotiated" and (ev := neg.next_event()) is not NEED_DATA:
            events.append(ev)
        sent += neg.data_to_send()
    return events, sent


@given(st.lists(st.integers(0, 10_000), max_size=20))
def test_negotiation_chunking_invariant(cuts: list[int]) -> None:
    assert struct_info_unknown  # an unknown info type is part of the stream
    expected = run_negotiation([NEGOTIATION_STREAM])
    assert run_negotiation(split(NEGOTIATION_STREAM, cuts)) == expected
    assert len(expected[0]) == 1


def transmission_stream(extended: bool) -> tuple[ClientTransmission, bytes]:
    """A client with requests in flight and a valid reply stream built by the server."""
    info = export(extended=extended, contexts={"base:allocation": 1})
    pair = Pair(info)
    c = pair.client
    r1 = c.send(Request(NBD_CMD_READ, 0, 4096))
    r2 = c.send(Request(NBD_CMD_READ, 8192, 1024))
    wr = c.send(Request(NBD_CMD_WRITE, 0, data=b"w" * 512))
    bs = c.send(Request(NBD_CMD_BLOCK_STATUS, 0, 1 << 20))
    fl = c.send(Request(NBD_CMD_FLUSH))
    pair.to_server()
    s = pair.server
    s.reply_data(r1, 2048, bytes(range(256)) * 8)
    s.reply(fl)
    s.reply_hole(r1, 0, 1024)
    s.reply_block_status(bs, 1, [Extent(4096, 0), Extent(1 << 20, 3)], done=True)
    s.reply_error(wr, errno.ENOSPC, "full")
    s.reply(r2, data=b"r" * 1024)
    s.reply_data(r1, 1024, b"m" * 1024, done=True)
    return c, s.data_to_send()


@given(st.booleans(), st.lists(st.integers(0, 100_000), max_size=30))
def test_transmission_chunking_invariant(extended: bool, cuts: list[int]) -> None:
    whole_tx, stream = transmission_stream(extended)
    expected = drain(whole_tx, stream)
    assert len(expected) == 11
    tx, _ = transmission_stream(extended)
    got: list[object] = []
    for piece in split(stream, cuts):
        got += drain(tx, piece)
    assert got == expected
    assert not tx.in_flight


@given(st.lists(st.integers(0, 100_000), max_size=30))
def test_server_chunking_invariant(cuts: list[int]) -> None:
    stream = (w.request(0, 1, 0, 512) + w.request(1, 2, 0, 700, data=bytes(700))
              + w.request(3, 3) + w.request(2, 4))
    srv = ServerTransmission()
    got: list[object] = []
    for piece in split(stream, cuts):
        srv.receive_data(piece)
        while (ev := srv.next_event()) is not NEED_DATA:
            got.append(ev)
    assert [r.cookie for r in got] == [1, 2, 3, 4]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ fuzz rule


def feed_negotiation(data: bytes, prefix: bytes) -> None:
    neg = ClientNegotiation("disk", meta_contexts=["base:allocation"], mode="go")
    with contextlib.suppress(ProtocolError, OptionError):
        drain_negotiation(neg, prefix + data, eof=True)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from([b"", w.greeting(3), w.greeting(1)]))
def test_fuzz_negotiation(data: bytes, prefix: bytes) -> None:
    feed_negotiation(data, prefix)


@FUZZ
@given(st.data())
def test_fuzz_negotiation_mutations(data: st.DataObject) -> None:
    stream = bytearray(NEGOTIATION_STREAM)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(stream) - 1))
        stream[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(stream)))
    feed_negotiation(bytes(stream[:cut]), b"")


def feed_transmission(tx: ClientTransmission, data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        drain(tx, data, eof=True)


# Header prefixes that get random payloads past the magic check.
REPLY_PREFIXES = [b"", b"\x67\x44\x66\x98", b"\x66\x8e\x33\xef", b"\x6e\x8a\x27\x8c"]


@FUZZ
@given(st.binary(max_size=300), st.sampled_from(REPLY_PREFIXES))
def test_fuzz_transmission(data: bytes, prefix: bytes) -> None:
    feed_transmission(hostile_tx(), prefix + data)


@FUZZ
@given(st.data(), st.booleans())
def test_fuzz_transmission_mutations(data: st.DataObject, extended: bool) -> None:
    tx, stream = transmission_stream(extended)
    mutated = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(mutated) - 1))
        mutated[i] = data.draw(st.integers(0, 255))
    feed_transmission(tx, bytes(mutated[: data.draw(st.integers(0, len(mutated)))]))


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([b"", b"\x25\x60\x95\x13"]), st.booleans())
def test_fuzz_server(data: bytes, prefix: bytes, extended: bool) -> None:
    srv = ServerTransmission(extended_headers=extended, max_payload=1 << 16)
    try:
        if prefix + data:
            srv.receive_data(prefix + data)
        srv.receive_data(b"")
        while (ev := srv.next_event()) is not NEED_DATA:
            if type(ev).__name__ == "ConnectionClosed":
                break
    except ProtocolError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([w.T_DATA, w.T_HOLE, w.T_BS, w.T_BS_EXT,
                                           w.T_ERROR, w.T_NONE]),
                          st.integers(0, 2**64 - 1)), min_size=1, max_size=5))
def test_claimed_lengths_do_not_allocate(headers: list[tuple[int, int]]) -> None:
    """Headers claiming huge payloads cost nothing: they are refused or wait for data."""
    stream = b"".join(w.ext_chunk(1, t, length=n) for t, n in headers)
    tx = ClientTransmission(export(extended=True, contexts={"base:allocation": 1}))
    tx.send(Request(NBD_CMD_READ, 0, 4096, cookie=1))
    tracemalloc.start()
    try:
        feed_transmission(tx, stream)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# ------------------------------------------------------------------ reassembly


@settings(max_examples=150, deadline=None)
@given(st.data(), st.booleans(), st.booleans())
def test_random_read_chunking_reassembles(data: st.DataObject, extended: bool,
                                          assemble: bool) -> None:
    length = data.draw(st.integers(1, 4096))
    content = bytearray(data.draw(st.binary(min_size=length, max_size=length)))
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(1, length - 1)), max_size=12))))
    bounds = [0, *[c for c in cuts if 0 < c < length], length]
    pieces = list(itertools.pairwise(bounds))
    holes = [data.draw(st.booleans()) for _ in pieces]
    for (a, b), hole in zip(pieces, holes, strict=True):
        if hole:
            content[a:b] = bytes(b - a)
    order = data.draw(st.permutations(range(len(pieces))))
    offset = 512 * data.draw(st.integers(0, 8))
    pair = Pair(export(extended=extended), assemble_reads=assemble)
    cookie = pair.client.send(Request(NBD_CMD_READ, offset, length))
    pair.to_server()
    for n, i in enumerate(order):
        a, b = pieces[i]
        last = n == len(order) - 1
        if holes[i]:
            pair.server.reply_hole(cookie, offset + a, b - a, done=last)
        else:
            pair.server.reply_data(cookie, offset + a, bytes(content[a:b]), done=last)
    events = pair.to_client()
    result = bytearray(length)
    for ev in events:
        if isinstance(ev, ReadData):
            result[ev.offset - offset : ev.offset - offset + len(ev.data)] = ev.data
    assert result == content
    assert events[-1].ok  # type: ignore[union-attr]
    if assemble:
        assert len(events) == 2 and isinstance(events[0], ReadData)


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([b"", b"\0\0\0\x03IHAVEOPT"]))
def test_fuzz_server_negotiation(data: bytes, prefix: bytes) -> None:
    srv = ServerNegotiation([ServerExport("", 4096)], tls=True)
    with contextlib.suppress(ProtocolError):
        if prefix + data:
            srv.receive_data(prefix + data)
        srv.receive_data(b"")
        while srv.state not in ("done", "tls-handshake") and srv.next_event() is not NEED_DATA:
            pass
