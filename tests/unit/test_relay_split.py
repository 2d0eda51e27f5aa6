"""The relay core cutting kernel requests to the server's maximum block size: no sockets.

The server is the sans-IO :class:`~appliance.nbd.ServerTransmission` of
:mod:`tests.unit.test_relay_core`; its export advertises minimum 512, preferred 4096 and
maximum 64 KiB, like ``nbdkit --filter=blocksize-policy blocksize-maximum=65536``.
"""

from __future__ import annotations

import errno
import os

import pytest

from appliance.nbd import (
    NBD_CMD_CACHE,
    NBD_CMD_FLAG_FUA,
    NBD_CMD_FLAG_NO_HOLE,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_TRIM,
    NBD_CMD_WRITE,
    NBD_CMD_WRITE_ZEROES,
    ExportInfo,
    Request,
)
from appliance.nbd.pieces import cut, piece_size
from appliance.nbd.proto import (
    NBD_FLAG_HAS_FLAGS,
    NBD_FLAG_SEND_CACHE,
    NBD_FLAG_SEND_FLUSH,
    NBD_FLAG_SEND_FUA,
    NBD_FLAG_SEND_TRIM,
    NBD_FLAG_SEND_WRITE_ZEROES,
)
from appliance.relay.core import (
    AcceptServer,
    Answer,
    ConnectionLost,
    DropServer,
    KernelRequest,
    Reconnect,
    Reconnected,
    RelayAction,
    RelayCore,
    RelayState,
    Tick,
)
from appliance.relay.policy import ReconnectPolicy
from appliance.relay.split import WINDOW
from tests.unit.test_relay_core import Server, answers

KiB, MiB = 1 << 10, 1 << 20
SIZE = 64 * MiB
MAX = 64 * KiB
FLAGS = (NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM
         | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_CACHE)
INFO = ExportInfo(name="", size=SIZE, flags=FLAGS, min_block_size=512,
                  preferred_block_size=4096, max_block_size=MAX, block_size_sent=True)


def core_for(info: ExportInfo = INFO, **policy: float | None) -> RelayCore:
    return RelayCore(info, ReconnectPolicy(**policy), now=0.0)  # type: ignore[arg-type]


def kernel(command: int, cookie: int, offset: int, length: int = 0, *, flags: int = 0,
           data: bytes | None = None) -> KernelRequest:
    return KernelRequest(Request(command, offset, len(data) if data else length, flags,
                                 cookie, data))


def ranges(reqs: list[Request]) -> list[tuple[int, int]]:
    return [(r.offset, r.length) for r in reqs]


def serve_all(core: RelayCore, srv: Server, disk: bytearray, now: float = 1.0
              ) -> list[RelayAction]:
    """Answer every request the core sends (and the pieces that follow) from ``disk``."""
    out: list[RelayAction] = []
    while reqs := srv.requests(core):
        for r in reqs:
            assert r.cookie is not None
            if r.command == NBD_CMD_READ:
                out += core.handle(srv.reply(r.cookie, data=bytes(disk[r.offset:r.offset
                                                                       + r.length])), now)
            else:
                if r.command == NBD_CMD_WRITE:
                    assert r.data is not None
                    disk[r.offset:r.offset + r.length] = r.data
                elif r.command in (NBD_CMD_WRITE_ZEROES, NBD_CMD_TRIM):
                    disk[r.offset:r.offset + r.length] = bytes(r.length)
                out += core.handle(srv.reply(r.cookie), now)
    return out


# --------------------------------------------------------------------------- cutting


def test_piece_size_is_the_maximum_rounded_to_the_preferred_or_minimum_block() -> None:
    assert piece_size(INFO) == MAX
    odd = ExportInfo(name="", size=SIZE, flags=FLAGS, min_block_size=512,
                     preferred_block_size=4096, max_block_size=MAX + 1536)
    assert piece_size(odd) == MAX  # pieces stay on preferred-block boundaries
    tiny = ExportInfo(name="", size=SIZE, flags=FLAGS, min_block_size=512,
                      preferred_block_size=65536, max_block_size=6656)
    assert piece_size(tiny) == 6656  # preferred above the maximum: the minimum's multiple


def test_cut_keeps_pieces_after_the_first_aligned_to_the_piece_size() -> None:
    assert list(cut(4096, 3 * MAX, MAX)) == [(4096, MAX - 4096), (MAX, MAX), (2 * MAX, MAX),
                                             (3 * MAX, 4096)]
    assert list(cut(0, MAX, MAX)) == [(0, MAX)]


# --------------------------------------------------------------------------- READ / WRITE


def test_request_within_the_maximum_is_not_split_and_keeps_the_kernels_cookie() -> None:
    core, srv = core_for(), Server()
    core.handle(kernel(NBD_CMD_READ, 7, 0, MAX), 0.0)
    (req,) = srv.requests(core)
    assert (req.cookie, req.length) == (7, MAX) and core.stats.split == 0


def test_split_read_is_assembled_in_order_and_answered_once() -> None:
    core, srv = core_for(), Server()
    disk = os.urandom(5 * MAX)
    assert core.handle(kernel(NBD_CMD_READ, 9, MAX, 4 * MAX), 0.0) == []
    pieces = srv.requests(core)
    assert ranges(pieces) == [(MAX * i, MAX) for i in range(1, 5)]
    assert len({p.cookie for p in pieces}) == 4 and 9 not in {p.cookie for p in pieces}
    got: list[RelayAction] = []
    for p in reversed(pieces):  # the server answers in any order
        assert p.cookie is not None
        assert got == []  # no answer before the last piece
        got = core.handle(srv.reply(p.cookie, data=disk[p.offset:p.offset + MAX]), 0.1)
    assert got == [Answer(9, 0, disk[MAX:5 * MAX])]
    assert not core.pending and core.stats.split == 1 and core.stats.replies == 1


def test_split_write_sends_each_slice_at_its_offset() -> None:
    core, srv = core_for(), Server()
    data = os.urandom(200 * KiB)
    disk = bytearray(SIZE)
    core.handle(kernel(NBD_CMD_WRITE, 3, 4096, flags=NBD_CMD_FLAG_FUA, data=data), 0.0)
    pieces = srv.requests(core)
    assert ranges(pieces) == [(4096, MAX - 4096), (MAX, MAX), (2 * MAX, MAX),
                              (3 * MAX, 4096 + 200 * KiB - 3 * MAX)]
    assert all(p.flags == NBD_CMD_FLAG_FUA for p in pieces)  # each piece durable
    for p in pieces:
        assert p.data is not None and p.cookie is not None
        disk[p.offset:p.offset + p.length] = p.data
    acts = [a for p in pieces if p.cookie is not None
            for a in core.handle(srv.reply(p.cookie), 0.1)]
    assert acts == [Answer(3, 0)]
    assert bytes(disk[4096:4096 + len(data)]) == data


def test_write_over_32_mib_from_the_kernel_goes_in_pieces_of_the_default_maximum() -> None:
    """No NBD_INFO_BLOCK_SIZE from the server: proto.md's 32 MiB maximum applies."""
    info = ExportInfo(name="", size=SIZE, flags=FLAGS)
    core, srv = core_for(info), Server()
    data = os.urandom(40 * MiB)
    core.handle(kernel(NBD_CMD_WRITE, 1, 0, data=data), 0.0)
    disk = bytearray(SIZE)
    assert serve_all(core, srv, disk) == [Answer(1, 0)]
    assert core.stats.pieces == 2 and disk[:len(data)] == data


def test_error_in_one_piece_fails_the_request_once_after_the_pieces_in_flight() -> None:
    core, srv = core_for(), Server()
    core.handle(kernel(NBD_CMD_READ, 5, 0, 4 * MAX), 0.0)
    p = srv.requests(core)
    assert [c.cookie for c in p if c.cookie is not None] and len(p) == 4
    ck = [c.cookie for c in p]
    assert core.handle(srv.reply(ck[2], error=errno.ENOSPC), 0.1) == []  # others in flight
    assert core.handle(srv.reply(ck[1], error=errno.EIO), 0.1) == []
    assert core.handle(srv.reply(ck[0], data=bytes(MAX)), 0.1) == []
    assert core.handle(srv.reply(ck[3], data=bytes(MAX)), 0.1) == [Answer(5, errno.EIO)]
    assert not core.pending and core.stats.errors == 1  # the lowest failed piece's errno
    assert core.state is RelayState.CONNECTED


def test_after_an_error_no_further_pieces_are_sent() -> None:
    core, srv = core_for(), Server()
    core.handle(kernel(NBD_CMD_WRITE_ZEROES, 6, 0, 4 * WINDOW * MAX), 0.0)
    first = srv.requests(core)
    assert len(first) == WINDOW  # the window bounds one request's pieces in flight
    acts = core.handle(srv.reply(first[0].cookie, error=errno.EIO), 0.1)  # type: ignore[arg-type]
    assert acts == [] and srv.requests(core) == []
    for p in first[1:]:
        acts += core.handle(srv.reply(p.cookie), 0.1)  # type: ignore[arg-type]
    assert acts == [Answer(6, errno.EIO)] and srv.requests(core) == []
    assert core.stats.pieces == WINDOW


@pytest.mark.parametrize("command", [NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES, NBD_CMD_CACHE])
def test_oversize_trim_write_zeroes_and_cache_are_split(command: int) -> None:
    core, srv = core_for(), Server()
    flags = NBD_CMD_FLAG_NO_HOLE if command == NBD_CMD_WRITE_ZEROES else NBD_CMD_FLAG_FUA
    disk = bytearray(b"\xff" * SIZE)
    core.handle(kernel(command, 11, MiB, 4 * MiB, flags=flags), 0.0)
    acts = serve_all(core, srv, disk)
    assert acts == [Answer(11, 0)]
    assert core.stats.pieces == 4 * MiB // MAX
    if command != NBD_CMD_CACHE:
        assert disk[MiB:5 * MiB] == bytes(4 * MiB) and disk[MiB - 1] == disk[5 * MiB] == 0xFF


def test_flush_is_never_split() -> None:
    core, srv = core_for(), Server()
    core.handle(KernelRequest(Request(NBD_CMD_FLUSH, cookie=4)), 0.0)
    (req,) = srv.requests(core)
    assert (req.command, req.cookie) == (NBD_CMD_FLUSH, 4)


def test_kernel_cookie_held_by_a_piece_is_sent_under_a_borrowed_one() -> None:
    core, srv = core_for(), Server()
    core.handle(kernel(NBD_CMD_READ, 1, 0, 2 * MAX), 0.0)
    pieces = srv.requests(core)
    taken = pieces[0].cookie
    assert taken is not None
    core.handle(kernel(NBD_CMD_WRITE, taken, 8 * MAX, data=b"k" * 4096), 0.0)  # same value
    (w,) = srv.requests(core)
    assert w.cookie not in {p.cookie for p in pieces}
    assert w.cookie is not None
    # Before the write is answered, the kernel's next cookie happens to be the borrowed one.
    core.handle(kernel(NBD_CMD_READ, w.cookie, 0, 4096), 0.1)
    (r,) = srv.requests(core)
    assert r.cookie not in {w.cookie, taken} and r.cookie is not None
    assert core.handle(srv.reply(r.cookie, data=b"x" * 4096), 0.1) == [
        Answer(w.cookie, 0, b"x" * 4096)]
    assert core.handle(srv.reply(w.cookie), 0.1) == [Answer(taken, 0)]
    acts = [a for p in pieces if p.cookie is not None
            for a in core.handle(srv.reply(p.cookie, data=b"r" * MAX), 0.1)]
    assert acts == [Answer(1, 0, b"r" * 2 * MAX)]


# --------------------------------------------------------------------------- outages


def test_replay_sends_only_the_unfinished_pieces() -> None:
    core, srv = core_for(), Server()
    disk = os.urandom(4 * MAX)
    core.handle(kernel(NBD_CMD_READ, 2, 0, 4 * MAX), 0.0)
    p = srv.requests(core)
    for done in (p[0], p[2]):
        assert done.cookie is not None
        core.handle(srv.reply(done.cookie, data=disk[done.offset:done.offset + MAX]), 0.1)
    assert core.handle(ConnectionLost("reset"), 1.0) == [DropServer("reset"), Reconnect()]
    assert core.handle(Reconnected(INFO), 2.0) == [AcceptServer()]
    fresh = Server()
    again = fresh.requests(core)
    assert ranges(again) == [(MAX, MAX), (3 * MAX, MAX)]  # not the two finished ones
    acts = [a for r in again if r.cookie is not None
            for a in core.handle(fresh.reply(r.cookie, data=disk[r.offset:r.offset + MAX]), 2.1)]
    assert acts == [Answer(2, 0, disk)]
    assert core.stats.replayed == 1


def test_replay_cuts_unfinished_pieces_by_the_new_servers_maximum() -> None:
    core, srv = core_for(), Server()
    data = os.urandom(3 * MAX)
    core.handle(kernel(NBD_CMD_WRITE, 8, 0, data=data), 0.0)
    p = srv.requests(core)
    assert p[0].cookie is not None
    core.handle(srv.reply(p[0].cookie), 0.1)
    core.handle(ConnectionLost("reset"), 1.0)
    smaller = ExportInfo(name="", size=SIZE, flags=FLAGS, min_block_size=512,
                         preferred_block_size=4096, max_block_size=MAX // 2)
    core.handle(Reconnected(smaller), 2.0)
    disk = bytearray(SIZE)
    fresh = Server()
    acts = serve_all(core, fresh, disk)
    assert acts == [Answer(8, 0)]
    assert disk[MAX:3 * MAX] == data[MAX:] and disk[:MAX] == bytes(MAX)


def test_unsplit_request_is_split_on_replay_when_the_new_maximum_is_smaller() -> None:
    core = core_for()
    core.handle(ConnectionLost("reset"), 0.5)
    core.handle(kernel(NBD_CMD_READ, 3, 0, MAX), 1.0)
    smaller = ExportInfo(name="", size=SIZE, flags=FLAGS, min_block_size=512,
                         max_block_size=MAX // 4)
    core.handle(Reconnected(smaller), 2.0)
    disk = bytearray(os.urandom(MAX))
    assert serve_all(core, Server(), disk) == [Answer(3, 0, bytes(disk))]
    assert core.stats.pieces == 4


def test_pieces_with_an_error_are_answered_at_the_loss_not_replayed() -> None:
    core, srv = core_for(), Server()
    core.handle(kernel(NBD_CMD_WRITE_ZEROES, 4, 0, 2 * MAX), 0.0)
    p = srv.requests(core)
    assert p[0].cookie is not None
    core.handle(srv.reply(p[0].cookie, error=errno.EPERM), 0.1)
    acts = core.handle(ConnectionLost("reset"), 1.0)
    assert answers(acts) == [(4, errno.EPERM)]
    core.handle(Reconnected(INFO), 2.0)
    assert Server().requests(core) == []


def test_eshutdown_on_a_piece_keeps_it_for_the_replay() -> None:
    core, srv = core_for(), Server()
    core.handle(kernel(NBD_CMD_TRIM, 12, 0, 2 * MAX), 0.0)
    p = srv.requests(core)
    assert p[1].cookie is not None
    core.handle(srv.reply(p[1].cookie), 0.1)
    acts = core.handle(srv.reply(p[0].cookie, error=errno.ESHUTDOWN), 0.2)  # type: ignore[arg-type]
    assert [type(a) for a in acts] == [DropServer, Reconnect]
    core.handle(Reconnected(INFO), 1.0)
    fresh = Server()
    again = fresh.requests(core)
    assert ranges(again) == [(0, MAX)] and again[0].cookie is not None
    assert core.handle(fresh.reply(again[0].cookie), 1.1) == [Answer(12, 0)]


def test_deadline_during_a_split_request_fails_it_once() -> None:
    core, srv = core_for(deadline=5.0), Server()
    core.handle(kernel(NBD_CMD_READ, 6, 0, 4 * MAX), 0.0)
    p = srv.requests(core)
    assert p[0].cookie is not None
    core.handle(srv.reply(p[0].cookie, data=bytes(MAX)), 0.1)
    core.handle(ConnectionLost("reset"), 1.0)
    assert core.handle(Tick(), 5.9) == []
    acts = core.handle(Tick(), 6.0)
    assert acts == [Answer(6, errno.EIO)]
    assert core.stats.failed_by_deadline == 1 and core.stats.replies == 1
    assert core.handle(Tick(), 7.0) == []
    core.handle(Reconnected(INFO), 8.0)
    assert Server().requests(core) == []  # nothing of it left to send
