"""Hostile servers in the transmission phase: valid negotiation, then mutated replies.

The server negotiates properly (structured replies, extended headers when hypothesis lets
it), then answers the real blocking client's requests (``Connection.pread``,
``block_status``, ``pwrite``, ``flush``) with replies built by the core's
ServerTransmission, split into chunks (data, hole, done) -- and hypothesis mutates some of
those frames.  Named attacks cover what a fuzzer may not hit: chunks beyond the request,
overlapping chunks, a 2^63 length, wrong cookies, a reply that never finishes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.client import connect
from appliance.nbd import (
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_READ,
    Extent,
    Request,
    ServerTransmission,
    proto,
)
from tests.hostile import harness
from tests.hostile_server import Agreed, Conn, HostileServer, negotiate

pytestmark = pytest.mark.xdist_group("hostile")  # one worker: one tally (conftest)

Frames = list[bytes]


def valid_frames(srv: ServerTransmission, agreed: Agreed, req: Request) -> Frames:
    """A correct reply to ``req``, one frame per chunk."""
    assert req.cookie is not None
    frames: Frames = []

    def take() -> None:
        out = srv.data_to_send()
        if out:
            frames.append(out)

    if req.command == NBD_CMD_READ and agreed.structured and req.length >= 2:
        half = req.length // 2
        srv.reply_data(req.cookie, req.offset, bytes(range(256)) * (half // 256) + b"\x01" * (
            half % 256))
        take()
        srv.reply_hole(req.cookie, req.offset + half, req.length - half)
        take()
        srv.reply_done(req.cookie)
    elif req.command == NBD_CMD_READ:
        srv.reply(req.cookie, data=b"\x02" * req.length)
    elif req.command == NBD_CMD_BLOCK_STATUS and agreed.structured:
        ctx = next(iter(agreed.contexts.values()), 1)
        srv.reply_block_status(req.cookie, ctx, [Extent(req.length // 2 or 1, 0),
                                                 Extent(req.length - req.length // 2 or 1, 3)])
        take()
        srv.reply_done(req.cookie)
    elif req.command == NBD_CMD_BLOCK_STATUS:
        srv.reply(req.cookie, error=95)  # EOPNOTSUPP
    else:
        srv.reply(req.cookie)
    take()
    return frames


ReplyFn = Callable[[ServerTransmission, Agreed, Request, int], Frames]


def serving(reply: ReplyFn, *, extended_ok: bool = True, stall: bool = False):
    """Negotiate validly, then answer each request with ``reply(srv, agreed, req, n)``."""

    def script(conn: Conn) -> None:
        agreed = negotiate(conn, extended_ok=extended_ok)
        if agreed is None:
            return
        srv = agreed.transmission()
        for n in range(16):
            req = conn.read_request(srv)
            if req is None or req.command == proto.NBD_CMD_DISC:
                return
            try:
                frames = reply(srv, agreed, req, n)
            except harness.SendThenClose as cut:
                conn.send(b"".join(cut.frames))
                return
            for f in frames:
                conn.send(f)
        if stall:
            conn.stop.wait(harness.CLIENT_TIMEOUT * 6)

    return script


def client_session(uri: str) -> None:
    with connect(uri, policy=harness.POLICY, meta_contexts=("base:allocation",)) as c:
        c.pread(0, 8192)
        if c.info.meta_contexts:
            c.block_status(0, 65536)
        c.pwrite(b"w" * 4096, 4096)
        c.flush()
        c.pread(512, 1000)


def run(script, what: str) -> harness.Outcome:
    srv = HostileServer(script)
    try:
        out = harness.run_case(lambda: client_session(srv.uri()), on_hang=srv.close)
    finally:
        srv.close()
    assert not srv.errors, f"hostile server script failed: {srv.errors!r}"
    harness.check(out, what)
    return out


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.dictionaries(st.integers(0, 9), harness.MUTATION, min_size=1, max_size=3),
       extended_ok=st.booleans(), stall=st.integers(0, 9).map(lambda n: n == 0))
def test_mutated_replies_end_cleanly(plan, extended_ok, stall) -> None:
    counter = [0]
    flt = harness.frame_filter(plan)

    def reply(srv: ServerTransmission, agreed: Agreed, req: Request, _n: int) -> Frames:
        out: Frames = []
        for f in valid_frames(srv, agreed, req):
            out += flt(counter[0], f)
            counter[0] += 1
        return out

    run(serving(reply, extended_ok=extended_ok, stall=stall), f"plan={plan!r}")


# ----------------------------------------------------------------------------- named attacks


def _chunk(agreed: Agreed, rtype: int, cookie: int, payload: bytes, *, done: bool = True,
           offset: int = 0, length: int | None = None) -> bytes:
    flags = proto.NBD_REPLY_FLAG_DONE if done else 0
    n = len(payload) if length is None else length
    if agreed.extended:
        return proto.EXTENDED_REPLY.pack(proto.NBD_EXTENDED_REPLY_MAGIC, flags, rtype, cookie,
                                         offset, n) + payload
    return proto.STRUCTURED_REPLY.pack(proto.NBD_STRUCTURED_REPLY_MAGIC, flags, rtype, cookie,
                                       n) + payload


def on_first_read(attack: Callable[[Agreed, Request], Frames]) -> ReplyFn:
    def reply(srv: ServerTransmission, agreed: Agreed, req: Request, _n: int) -> Frames:
        if req.command == NBD_CMD_READ:
            return attack(agreed, req)
        return valid_frames(srv, agreed, req)

    return reply


def _data(agreed: Agreed, req: Request, offset: int, data: bytes, done: bool = True) -> bytes:
    assert req.cookie is not None
    return _chunk(agreed, proto.NBD_REPLY_TYPE_OFFSET_DATA, req.cookie,
                  proto.OFFSET.pack(offset) + data, done=done, offset=req.offset)


def _simple(cookie: int, error: int = 0, data: bytes = b"") -> bytes:
    return proto.SIMPLE_REPLY.pack(proto.NBD_SIMPLE_REPLY_MAGIC, error, cookie) + data


NAMED_TX: dict[str, tuple[Callable[[Agreed, Request], Frames], bool]] = {
    # name: (attack on the first READ, extended headers allowed)
    "chunk beyond the request": (lambda a, r: [
        _data(a, r, r.offset + r.length, b"x" * 16)], False),
    "chunk starting before the request": (lambda a, r: [
        _data(a, r, r.offset - 1 if r.offset else 2**64 - 1, b"x" * 16)], False),
    "overlapping chunks": (lambda a, r: [
        _data(a, r, r.offset, b"a" * r.length, done=False),
        _data(a, r, r.offset, b"b" * r.length)], False),
    "data chunk length 2^32-1": (lambda a, r: [_chunk(
        a, proto.NBD_REPLY_TYPE_OFFSET_DATA, r.cookie or 0, proto.OFFSET.pack(r.offset),
        length=0xFFFFFFFF)], False),
    "extended chunk length 2^63": (lambda a, r: [_chunk(
        a, proto.NBD_REPLY_TYPE_OFFSET_DATA, r.cookie or 0, proto.OFFSET.pack(r.offset),
        length=1 << 63)], True),
    "extended hole length 2^63": (lambda a, r: [_chunk(
        a, proto.NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie or 0,
        proto.OFFSET_HOLE_EXT.pack(r.offset, 1 << 63) if a.extended
        else proto.OFFSET_HOLE.pack(r.offset, 0xFFFFFFFF))], True),
    "wrong cookie": (lambda a, r: [_data(a, r, r.offset, b"x" * r.length)[:8]
                                   + ((r.cookie or 0) + 1).to_bytes(8, "big")
                                   + _data(a, r, r.offset, b"x" * r.length)[16:]], False),
    "simple reply with wrong cookie": (lambda a, r: [_simple((r.cookie or 0) ^ 0xFF)], False),
    "bad reply magic": (lambda a, r: [b"\xde\xad\xbe\xef" + _data(a, r, r.offset,
                                                                  b"x" * r.length)[4:]], False),
    "data chunk shorter than its offset": (lambda a, r: [_chunk(
        a, proto.NBD_REPLY_TYPE_OFFSET_DATA, r.cookie or 0, b"\0\0\0")], False),
    "error chunk with error 0": (lambda a, r: [_chunk(
        a, proto.NBD_REPLY_TYPE_ERROR, r.cookie or 0, proto.ERROR_HEAD.pack(0, 0))], False),
    "error message longer than the chunk": (lambda a, r: [_chunk(
        a, proto.NBD_REPLY_TYPE_ERROR, r.cookie or 0, proto.ERROR_HEAD.pack(5, 4000) + b"e")],
        False),
    "unknown non-error chunk type": (lambda a, r: [_chunk(a, 77, r.cookie or 0, b"zz")], False),
    "DONE never sent, then close": (lambda a, r: [
        _data(a, r, r.offset, b"x" * r.length, done=False)], False),
    "data after DONE": (lambda a, r: [
        _data(a, r, r.offset, b"x" * r.length),
        _data(a, r, r.offset, b"x" * r.length)], False),
    "hole of length 0": (lambda a, r: [_chunk(
        a, proto.NBD_REPLY_TYPE_OFFSET_HOLE, r.cookie or 0,
        proto.OFFSET_HOLE_EXT.pack(r.offset, 0) if a.extended
        else proto.OFFSET_HOLE.pack(r.offset, 0))], True),
    "simple reply with wrong data length then close": (lambda a, r: [
        _simple(r.cookie or 0, 0, b"x" * 10)], False),
}


@pytest.mark.parametrize("name", sorted(NAMED_TX))
def test_named_reply_attack(name: str) -> None:
    attack, extended_ok = NAMED_TX[name]
    out = run(serving(on_first_read(attack), extended_ok=extended_ok), name)
    assert out.error is not None, f"{name}: the client accepted it"
