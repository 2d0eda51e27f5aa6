"""Slow-loris servers: valid bytes, one every 100 ms, never finishing.

Each byte arrives well inside the client's socket timeout, so a client that only has a
per-``recv`` timeout waits for as long as the server likes (a 64 KiB option reply at
10 bytes/s is almost two hours).  The client must give up within a bounded time related
to its configured timeout (here 1 s): we allow ``GIVE_UP`` seconds.
"""

from __future__ import annotations

import pytest

from appliance.client import connect, export_info
from appliance.nbd import proto
from appliance.transport import ConnectPolicy
from tests.hostile import harness
from tests.hostile_server import Conn, HostileServer, greeting, negotiate, option_reply

pytestmark = pytest.mark.xdist_group("hostile")  # one worker: one tally (conftest)

TIMEOUT = 1.0
GIVE_UP = 10.0  # generous: 10x the configured timeout
POLICY = ConnectPolicy(timeout=TIMEOUT, attempts=1)


def _run(script, client) -> harness.Outcome:
    srv = HostileServer(script)
    try:
        out = harness.run_case(lambda: client(srv.uri()), deadline=GIVE_UP + 2.0,
                               on_hang=srv.close)
    finally:
        srv.close()
    return out


def test_trickled_greeting_alone_is_fine() -> None:
    """18 bytes at 10 bytes/s (1.8 s) is slow but legitimate and finite: it must work."""

    def script(conn: Conn) -> None:
        conn.trickle(greeting(), 0.1)
        negotiate(conn, hello=b"")

    out = _run(script, lambda uri: export_info(uri, policy=POLICY))
    harness.check(out)
    assert out.error is None, out.error


def test_endless_option_reply_trickle_times_out() -> None:
    """An NBD_REP_INFO announcing 60000 bytes, sent a byte per 100 ms."""

    def script(conn: Conn) -> None:
        conn.send(greeting())
        conn.recv_exact(4)
        option, _ = conn.read_option()
        head = proto.OPTION_REPLY_HEADER.pack(proto.NBD_REP_MAGIC, option, proto.NBD_REP_INFO,
                                              60000)
        conn.trickle(head + b"\0" * 60000, 0.1, limit=GIVE_UP + 10)

    out = _run(script, lambda uri: export_info(uri, policy=POLICY))
    assert not out.hung and out.elapsed < GIVE_UP, (
        f"client still negotiating after {out.elapsed:.1f}s with a server trickling a byte "
        f"per 100 ms (socket timeout {TIMEOUT}s): negotiation has no overall deadline")
    harness.check(out)
    assert out.error is not None


def test_endless_reply_trickle_times_out_in_transmission() -> None:
    """After a valid negotiation, the READ reply comes a byte per 100 ms."""

    def script(conn: Conn) -> None:
        agreed = negotiate(conn, extended_ok=False)
        assert agreed is not None
        srv = agreed.transmission()
        req = conn.read_request(srv)
        assert req is not None and req.cookie is not None
        srv.reply(req.cookie, data=b"\x05" * req.length)
        conn.trickle(srv.data_to_send(), 0.1, limit=GIVE_UP + 10)

    def client(uri: str) -> None:
        with connect(uri, policy=POLICY) as c:
            c.pread(0, 65536)

    out = _run(script, client)
    assert not out.hung and out.elapsed < GIVE_UP, (
        f"pread still waiting after {out.elapsed:.1f}s for a reply trickled a byte per "
        f"100 ms (socket timeout {TIMEOUT}s): a request has no overall deadline")
    harness.check(out)
    assert out.error is not None


def test_silent_server_times_out() -> None:
    """A server that accepts and never speaks: the socket timeout fires."""

    def script(conn: Conn) -> None:
        conn.stop.wait(GIVE_UP + 5)

    out = _run(script, lambda uri: export_info(uri, policy=POLICY))
    harness.check(out)
    assert out.error is not None and out.elapsed < TIMEOUT * 3


def test_option_reply_trickle_does_not_block_list() -> None:
    """NBD_OPT_LIST answered by an endless stream of valid NBD_REP_SERVER replies, slowly."""

    def script(conn: Conn) -> None:
        conn.send(greeting())
        conn.recv_exact(4)
        option, _ = conn.read_option()
        one = option_reply(option, proto.NBD_REP_SERVER, proto.U32.pack(1) + b"x")
        conn.trickle(one * 1000, 0.01, limit=GIVE_UP + 10)  # 100 bytes/s, ~4 replies/s

    from appliance.client import list_exports

    out = _run(script, lambda uri: list_exports(uri, policy=POLICY))
    assert not out.hung and out.elapsed < GIVE_UP, (
        f"list_exports still running after {out.elapsed:.1f}s against an endless trickle "
        f"of NBD_REP_SERVER replies")
    harness.check(out)
