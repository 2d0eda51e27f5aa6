"""The relay's sans-IO core: every state transition, without sockets, threads or sleeps.

The clock is a number the test passes in; the server's side of the wire is the sans-IO
:class:`~appliance.nbd.ServerTransmission` (simple replies), which decodes what the core
sends and encodes the replies fed back to it.
"""

from __future__ import annotations

import errno

import pytest

from appliance.nbd import (
    NBD_CMD_DISC,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_WRITE,
    NEED_DATA,
    ExportInfo,
    Request,
    ServerTransmission,
)
from appliance.nbd.proto import (
    NBD_FLAG_HAS_FLAGS,
    NBD_FLAG_READ_ONLY,
    NBD_FLAG_SEND_FLUSH,
    NBD_SIMPLE_REPLY_MAGIC,
    SIMPLE_REPLY,
)
from appliance.relay.core import (
    MAX_REPLAYS,
    AcceptServer,
    Answer,
    ConnectionLost,
    DropServer,
    KernelRequest,
    Reconnect,
    Reconnected,
    RefuseServer,
    RelayAction,
    RelayCore,
    RelayState,
    ServerData,
    Tick,
)
from appliance.relay.policy import ReconnectPolicy

SIZE = 1 << 20
INFO = ExportInfo(name="", size=SIZE, flags=NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH)


class Server:
    """The server's end of one connection, sans-IO: requests out, replies in."""

    def __init__(self) -> None:
        self.tx = ServerTransmission(structured_replies=False, extended_headers=False)

    def requests(self, core: RelayCore) -> list[Request]:
        data = core.data_for_server()
        if not data:
            return []
        self.tx.receive_data(data)
        out = []
        while (ev := self.tx.next_event()) is not NEED_DATA:
            assert isinstance(ev, Request)
            out.append(ev)
        return out

    def reply(self, cookie: int, *, error: int = 0, data: bytes = b"") -> ServerData:
        self.tx.reply(cookie, error=error, data=data)
        return ServerData(self.tx.data_to_send())


def read(cookie: int, offset: int = 0, length: int = 4096) -> KernelRequest:
    return KernelRequest(Request(NBD_CMD_READ, offset, length, cookie=cookie))


def write(cookie: int, offset: int = 0, data: bytes = b"w" * 4096) -> KernelRequest:
    return KernelRequest(Request(NBD_CMD_WRITE, offset, len(data), cookie=cookie, data=data))


def answers(actions: list[RelayAction]) -> list[tuple[int, int]]:
    return [(a.cookie, a.error) for a in actions if isinstance(a, Answer)]


def core_for(**policy: float | None) -> RelayCore:
    return RelayCore(INFO, ReconnectPolicy(**policy), now=0.0)  # type: ignore[arg-type]


def lose(core: RelayCore, now: float = 1.0) -> list[RelayAction]:
    return core.handle(ConnectionLost("reset"), now)


# --------------------------------------------------------------------------- CONNECTED


def test_request_is_forwarded_with_the_kernels_cookie_and_answered_with_the_data() -> None:
    core, srv = core_for(), Server()
    assert core.state is RelayState.CONNECTED
    assert core.handle(read(7, 8192), 0.1) == []
    (req,) = srv.requests(core)
    assert (req.command, req.cookie, req.offset, req.length) == (NBD_CMD_READ, 7, 8192, 4096)
    assert core.pending.keys() == {7}
    actions = core.handle(srv.reply(7, data=b"d" * 4096), 0.2)
    assert actions == [Answer(7, 0, b"d" * 4096)]
    assert not core.pending
    assert (core.stats.requests, core.stats.replies, core.stats.errors) == (1, 1, 0)


def test_server_error_reaches_the_kernel_as_its_errno_and_is_no_outage() -> None:
    core, srv = core_for(), Server()
    core.handle(write(3), 0.0)
    srv.requests(core)
    assert core.handle(srv.reply(3, error=errno.ENOSPC), 0.1) == [Answer(3, errno.ENOSPC)]
    assert core.state is RelayState.CONNECTED and core.stats.outages == 0


def test_out_of_range_request_gets_einval_from_the_typed_error_field() -> None:
    """Was: the errno was picked by ``"range" in str(exc)``, which no message contained,
    so a request past the end of the export got EIO; proto.md's answer is EINVAL."""
    core, srv = core_for(), Server()
    actions = core.handle(read(1, offset=SIZE - 4096, length=8192), 0.0)
    assert actions == [Answer(1, errno.EINVAL)]
    assert srv.requests(core) == []  # never sent: the connection stays usable
    assert core.handle(read(2), 0.0) == [] and [r.cookie for r in srv.requests(core)] == [2]


def test_request_the_export_forbids_gets_eio() -> None:
    core = RelayCore(ExportInfo(name="", size=SIZE, flags=NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY),
                     ReconnectPolicy(), 0.0)
    assert core.handle(write(1), 0.0) == [Answer(1, errno.EIO)]


def test_reply_for_an_unknown_cookie_breaks_the_connection() -> None:
    core, srv = core_for(), Server()
    core.handle(read(1), 0.0)
    srv.requests(core)
    reply = SIMPLE_REPLY.pack(NBD_SIMPLE_REPLY_MAGIC, 0, 99)  # the server core refuses to
    actions = core.handle(ServerData(reply), 0.1)
    assert isinstance(actions[0], DropServer) and "protocol error" in actions[0].why
    assert actions[1:] == [Reconnect(0.0)]
    assert core.state is RelayState.OUTAGE and core.pending.keys() == {1}


def test_garbage_from_the_server_is_an_outage_not_an_answer() -> None:
    core = core_for()
    core.handle(read(1), 0.0)
    actions = core.handle(ServerData(b"\xff" * 16), 0.1)
    assert [type(a) for a in actions] == [DropServer, Reconnect]
    assert core.state is RelayState.OUTAGE and not core.connected


def test_eshutdown_keeps_the_request_for_the_replay() -> None:
    core, srv = core_for(), Server()
    core.handle(write(5), 0.0)
    srv.requests(core)
    actions = core.handle(srv.reply(5, error=errno.ESHUTDOWN), 0.1)
    assert [type(a) for a in actions] == [DropServer, Reconnect]
    assert core.pending.keys() == {5} and core.stats.replies == 0


def test_silence_with_requests_outstanding_is_an_outage() -> None:
    core, srv = core_for(io_timeout=10.0), Server()
    core.handle(read(1), 100.0)  # the silence clock starts with the first request
    srv.requests(core)
    assert core.timeout(101.0) == pytest.approx(9.0)
    assert core.handle(Tick(), 109.0) == []
    core.handle(ServerData(srv.reply(1, data=bytes(4096)).data[:4]), 105.0)  # any bytes
    # restart it
    assert core.handle(Tick(), 114.0) == []
    actions = core.handle(Tick(), 115.5)
    assert isinstance(actions[0], DropServer) and "no reply" in actions[0].why
    assert core.state is RelayState.OUTAGE


def test_idle_connection_never_times_out() -> None:
    core = core_for(io_timeout=10.0)
    assert core.timeout(1000.0) is None
    assert core.handle(Tick(), 1000.0) == []


# --------------------------------------------------------------------------- OUTAGE


def test_lost_connection_queues_requests_and_reconnects() -> None:
    core = core_for()
    core.handle(read(1), 0.0)
    assert lose(core) == [DropServer("reset"), Reconnect(0.0)]
    assert core.state is RelayState.OUTAGE and core.stats.outages == 1
    assert lose(core, 1.5) == []  # a second report of the same loss changes nothing
    assert core.handle(read(2), 2.0) == []  # waits for the replay
    assert core.data_for_server() == b""
    assert list(core.pending) == [1, 2]


def test_replay_sends_every_unanswered_request_in_the_kernels_order() -> None:
    core, srv = core_for(), Server()
    for cookie in (10, 11, 12):
        core.handle(write(cookie, offset=cookie * 4096), 0.0)
    srv.requests(core)
    core.handle(srv.reply(11), 0.1)  # answered before the loss: not replayed
    lose(core, 1.0)
    core.handle(read(13), 1.5)
    core.handle(KernelRequest(Request(NBD_CMD_FLUSH, cookie=14)), 1.6)
    actions = core.handle(Reconnected(INFO), 3.0)
    assert actions == [AcceptServer()]
    assert core.state is RelayState.CONNECTED
    fresh = Server()
    replayed = fresh.requests(core)
    assert [r.cookie for r in replayed] == [10, 12, 13, 14]
    assert replayed[0].data == b"w" * 4096 and replayed[0].offset == 10 * 4096
    assert core.stats.replayed == 4 and core.stats.outage_log == [pytest.approx(2.0)]
    assert core.handle(fresh.reply(12), 3.1) == [Answer(12, 0)]


def test_a_request_every_new_connection_is_lost_on_fails_after_the_replay_budget() -> None:
    """Was: a request the connection always died on (seen on the Debian root after a
    server kill) was replayed on a new connection every 0.2 s for ever, each one ending
    the outage and so its deadline; the other requests were answered meanwhile."""
    core = core_for(deadline=50.0)
    core.handle(write(1), 0.0)
    core.handle(read(2), 0.0)
    Server().requests(core)
    now = 1.0
    for n in range(1, MAX_REPLAYS + 1):
        lose(core, now)
        assert core.handle(Reconnected(INFO), now + 0.2) == [AcceptServer()]
        srv = Server()
        assert [r.cookie for r in srv.requests(core)] == ([1, 2] if n == 1 else [1])
        if n == 1:
            assert core.handle(srv.reply(2, data=b"r" * 4096), now + 0.3) == [
                Answer(2, 0, b"r" * 4096)]
        now += 0.4
    lose(core, now)  # lost once more before its reply: no fifth connection for it
    actions = core.handle(Reconnected(INFO), now + 0.2)
    assert actions == [AcceptServer(), Answer(1, errno.EIO)]
    assert Server().requests(core) == [] and not core.pending
    assert core.state is RelayState.CONNECTED and core.stats.failed_by_replays == 1
    core.handle(write(1), now + 0.5)  # the cookie is free again, with a fresh budget
    assert [r.cookie for r in Server().requests(core)] == [1]


def test_a_request_answered_on_a_new_connection_keeps_no_replay_count() -> None:
    core, srv = core_for(), Server()
    core.handle(read(5), 0.0)
    srv.requests(core)
    for n in range(MAX_REPLAYS + 2):  # each connection answers it: never counted out
        lose(core, 1.0 + n)
        core.handle(Reconnected(INFO), 1.1 + n)
        fresh = Server()
        assert [r.cookie for r in fresh.requests(core)] == [5]
        assert answers(core.handle(fresh.reply(5, data=b"x" * 4096), 1.2 + n)) == [(5, 0)]
        core.handle(read(5), 1.3 + n)
        fresh.requests(core)
    assert core.stats.failed_by_replays == 0


def test_outage_deadline_fails_waiting_requests_then_new_ones_at_once() -> None:
    core = core_for(deadline=8.0)
    core.handle(read(1), 0.0)
    lose(core, 10.0)
    core.handle(read(2), 12.0)
    assert core.timeout(12.0) == pytest.approx(6.0)
    assert core.handle(Tick(), 17.9) == []
    assert answers(core.handle(Tick(), 18.0)) == [(1, errno.EIO), (2, errno.EIO)]
    assert core.state is RelayState.FAILING and core.stats.failed_by_deadline == 2
    assert core.timeout(20.0) is None  # nothing left to time
    assert answers(core.handle(read(3), 20.0)) == [(3, errno.EIO)]
    assert not core.pending


def test_back_after_the_deadline_serves_again() -> None:
    core = core_for(deadline=1.0)
    lose(core, 0.0)
    core.handle(Tick(), 5.0)
    assert core.state is RelayState.FAILING
    assert core.handle(Reconnected(INFO), 6.0) == [AcceptServer()]
    assert core.handle(read(4), 6.1) == []
    assert [r.cookie for r in Server().requests(core)] == [4]


def test_deadline_expiry_during_replay() -> None:
    """Replayed requests whose new connection dies before answering: the deadline counts
    from the second loss, and then fails them."""
    core, srv = core_for(deadline=5.0), Server()
    core.handle(write(1), 0.0)
    srv.requests(core)
    lose(core, 1.0)
    core.handle(Tick(), 5.9)  # 4.9 s into the first outage: still waiting
    core.handle(Reconnected(INFO), 5.95)
    assert [r.cookie for r in Server().requests(core)] == [1]
    lose(core, 6.0)
    assert core.handle(Tick(), 10.9) == []
    assert answers(core.handle(Tick(), 11.0)) == [(1, errno.EIO)]
    assert core.stats.outages == 2 and core.stats.replayed == 1


def test_zero_deadline_fails_at_the_first_tick() -> None:
    core = core_for(deadline=0.0)
    core.handle(read(1), 0.0)
    lose(core, 1.0)
    assert answers(core.handle(Tick(), 1.0)) == [(1, errno.EIO)]


def test_reconnect_with_another_size_is_refused_and_fails_the_waiting_requests() -> None:
    core = core_for(maximum=7.0)
    core.handle(read(1), 0.0)
    lose(core, 1.0)
    bigger = ExportInfo(name="", size=2 * SIZE, flags=INFO.flags)
    actions = core.handle(Reconnected(bigger), 2.0)
    assert actions == [RefuseServer("export size changed"), Answer(1, errno.EIO),
                       Reconnect(7.0)]
    assert core.state is RelayState.FAILING and not core.connected
    assert answers(core.handle(read(2), 3.0)) == [(2, errno.EIO)]
    # The right export comes back: the outage, counted from the first loss, ends.
    assert core.handle(Reconnected(INFO), 9.0) == [AcceptServer()]
    assert core.stats.outage_log == [pytest.approx(8.0)]


def test_a_connection_offered_while_connected_is_refused() -> None:
    core = core_for()
    actions = core.handle(Reconnected(INFO), 1.0)
    assert [type(a) for a in actions] == [RefuseServer]
    assert core.state is RelayState.CONNECTED


def test_trailing_bytes_of_a_new_connection_are_parsed_before_the_replay() -> None:
    core = core_for()
    core.handle(read(1), 0.0)
    lose(core, 1.0)
    actions = core.handle(Reconnected(INFO, trailing=b"\xff" * 16), 2.0)
    assert [type(a) for a in actions] == [AcceptServer, DropServer, Reconnect]
    assert core.state is RelayState.OUTAGE and core.pending.keys() == {1}


# --------------------------------------------------------------------------- DISC


def test_disc_drains_the_requests_in_flight_then_finishes() -> None:
    core, srv = core_for(), Server()
    core.handle(read(1), 0.0)
    srv.requests(core)
    assert core.handle(KernelRequest(Request(NBD_CMD_DISC)), 1.0) == []
    assert core.state is RelayState.DRAINING
    assert core.disconnect_bytes() != b""  # NBD_CMD_DISC for the server at shutdown
    assert core.handle(srv.reply(1, data=b"r" * 4096), 2.0) == [Answer(1, 0, b"r" * 4096)]
    assert core.state is RelayState.DONE and not core.gave_up


def test_disc_with_nothing_in_flight_is_done_at_once() -> None:
    core = core_for()
    core.handle(KernelRequest(Request(NBD_CMD_DISC)), 1.0)
    assert core.state is RelayState.DONE


def test_disc_drain_gives_up_after_its_timeout() -> None:
    core = core_for(io_timeout=None)
    core.handle(read(1), 0.0)
    core.handle(KernelRequest(Request(NBD_CMD_DISC)), 1.0)
    assert core.timeout(1.0) == pytest.approx(30.0)
    assert core.handle(Tick(), 30.9) == [] and core.state is RelayState.DRAINING
    core.handle(Tick(), 31.1)
    assert core.state is RelayState.DONE and core.gave_up


def test_disc_drain_timeout_is_not_hidden_by_the_longer_silence_timeout() -> None:
    """Was: with requests in flight the loop slept until the I/O timeout (60 s) and so
    overran the 30 s drain after NBD_CMD_DISC."""
    core = core_for(io_timeout=60.0)
    core.handle(read(1), 0.0)
    core.handle(KernelRequest(Request(NBD_CMD_DISC)), 1.0)
    assert core.timeout(1.0) == pytest.approx(30.0)


def test_loss_after_disc_fails_the_requests_in_flight_without_reconnecting() -> None:
    core = core_for()
    core.handle(read(1), 0.0)
    core.handle(KernelRequest(Request(NBD_CMD_DISC)), 1.0)
    actions = lose(core, 2.0)
    assert actions == [DropServer("reset"), Answer(1, errno.EIO)]
    assert core.state is RelayState.DONE and core.disconnect_bytes() == b""


def test_disc_during_an_outage_fails_the_waiting_requests_at_once() -> None:
    """Was: the relay refused every reconnection after NBD_CMD_DISC yet waited the full
    30 s drain for replies that could then never come."""
    core = core_for()
    core.handle(read(1), 0.0)
    lose(core, 1.0)
    core.handle(write(2), 1.5)
    actions = core.handle(KernelRequest(Request(NBD_CMD_DISC)), 2.0)
    assert answers(actions) == [(1, errno.EIO), (2, errno.EIO)]
    assert core.state is RelayState.DONE
    assert [type(a) for a in core.handle(Reconnected(INFO), 3.0)] == [RefuseServer]


def test_disc_while_failing_is_done_at_once() -> None:
    core = core_for(deadline=1.0)
    lose(core, 0.0)
    core.handle(Tick(), 2.0)
    core.handle(KernelRequest(Request(NBD_CMD_DISC)), 3.0)
    assert core.state is RelayState.DONE
