"""Hostile servers during negotiation: hypothesis mutates the frames a valid server sends.

A small valid fixed-newstyle server (tests/hostile_server.py) answers the real client's
options; one to three of its frames (the greeting, an option reply, an NBD_REP_INFO...)
are mutated: fields overwritten with interesting values (huge lengths, bad magic, wrong
option numbers), bits flipped, frames truncated, duplicated, dropped or preceded by
garbage.  Whatever happens, the client (``appliance.client``: ``export_info``,
``connect``, ``list_exports``, ``list_meta_contexts``) must end with success or a clean
one-line NBDError, in time, without large allocations.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.client import connect, export_info, list_exports, list_meta_contexts
from appliance.nbd import proto
from tests.hostile import harness
from tests.hostile_server import Conn, HostileServer, greeting, negotiate, option_reply

pytestmark = pytest.mark.xdist_group("hostile")  # one worker: one tally (conftest)

ACTIONS = {
    "info": lambda uri: export_info(uri, policy=harness.POLICY),
    "go": lambda uri: connect(uri, policy=harness.POLICY,
                              meta_contexts=("base:allocation",)).close(),
    "list": lambda uri: list_exports(uri, policy=harness.POLICY),
    "meta": lambda uri: list_meta_contexts(uri, policy=harness.POLICY),
}


def run_against(script, action: str, what: str) -> harness.Outcome:
    srv = HostileServer(script)
    try:
        out = harness.run_case(lambda: ACTIONS[action](srv.uri("disk")), on_hang=srv.close)
    finally:
        srv.close()
    assert not srv.errors, f"hostile server script failed: {srv.errors!r}"
    harness.check(out, what)
    return out


def mutating_script(plan: dict[int, tuple[object, ...]], extended_ok: bool, stall: bool):
    def script(conn: Conn) -> None:
        try:
            negotiate(conn, flt=harness.frame_filter(plan), extended_ok=extended_ok)
        except harness.SendThenClose as cut:
            conn.send(b"".join(cut.frames))
            return
        if stall:  # keep the connection open and say nothing: the client's timeout must fire
            conn.stop.wait(harness.CLIENT_TIMEOUT * 6)

    return script


@settings(max_examples=100, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.dictionaries(st.integers(0, 9), harness.MUTATION, min_size=1, max_size=3),
       action=st.sampled_from(sorted(ACTIONS)), extended_ok=st.booleans(),
       stall=st.integers(0, 9).map(lambda n: n == 0))
def test_mutated_negotiation_ends_cleanly(plan, action, extended_ok, stall) -> None:
    run_against(mutating_script(plan, extended_ok, stall), action, f"plan={plan!r} {action}")


# ----------------------------------------------------------------------------- named attacks


def _script_after_greeting(frames: list[bytes], *, hello: bytes | None = None):
    """Greeting, read the first option, then send ``frames`` and close."""

    def script(conn: Conn) -> None:
        conn.send(hello if hello is not None else greeting())
        conn.recv_exact(4)
        conn.read_option()
        for f in frames:
            conn.send(f)

    return script


def _header(option: int, reply: int, length: int) -> bytes:
    return proto.OPTION_REPLY_HEADER.pack(proto.NBD_REP_MAGIC, option, reply, length)


EXT = proto.NBD_OPT_EXTENDED_HEADERS
NAMED = {
    "bad NBDMAGIC": _script_after_greeting([], hello=b"XBDMAGIC" + greeting()[8:]),
    "bad IHAVEOPT": _script_after_greeting([], hello=greeting()[:8] + b"IHAVEOPX" + b"\0\3"),
    "oldstyle greeting": _script_after_greeting(
        [], hello=proto.NBDMAGIC.to_bytes(8, "big") + proto.CLISERV_MAGIC.to_bytes(8, "big")
        + (1 << 20).to_bytes(8, "big") + bytes(128)),
    "truncated greeting": _script_after_greeting([], hello=greeting()[:11]),
    "option reply length 2^32-1": _script_after_greeting([_header(EXT, proto.NBD_REP_ACK,
                                                                  0xFFFFFFFF)]),
    "option reply for another option": _script_after_greeting(
        [option_reply(proto.NBD_OPT_GO, proto.NBD_REP_ACK)]),
    "bad option reply magic": _script_after_greeting(
        [b"\x00" * 8 + option_reply(EXT, proto.NBD_REP_ACK)[8:]]),
    "unknown reply type": _script_after_greeting([option_reply(EXT, 0x7777)]),
    "ACK with payload": _script_after_greeting([option_reply(EXT, proto.NBD_REP_ACK, b"x" * 9)]),
    "truncated option reply": _script_after_greeting([option_reply(EXT, proto.NBD_REP_ACK)[:7]]),
    "endless replies (10001 x NBD_REP_SERVER)": _script_after_greeting(
        [option_reply(EXT, proto.NBD_REP_SERVER, b"\0\0\0\0")] * 10_001),
}


@pytest.mark.parametrize("name", sorted(NAMED))
@pytest.mark.parametrize("action", ["info", "go"])
def test_named_negotiation_attack(name: str, action: str) -> None:
    out = run_against(NAMED[name], action, name)
    assert out.error is not None, f"{name}: the client accepted it"


def _go_then(info_payload: bytes):
    """Valid up to NBD_OPT_GO, whose NBD_REP_INFO carries ``info_payload``."""

    def script(conn: Conn) -> None:
        conn.send(greeting())
        conn.recv_exact(4)
        for _ in range(8):
            option, _ = conn.read_option()
            if option == proto.NBD_OPT_GO:
                conn.send(option_reply(option, proto.NBD_REP_INFO, info_payload))
                conn.send(option_reply(option, proto.NBD_REP_ACK))
                return
            conn.send(option_reply(option, proto.NBD_REP_ERR_UNSUP))

    return script


BAD_INFO = {
    "block size min 0": proto.INFO_BLOCK_SIZE.pack(proto.NBD_INFO_BLOCK_SIZE, 0, 4096, 1 << 20),
    "block size min 3": proto.INFO_BLOCK_SIZE.pack(proto.NBD_INFO_BLOCK_SIZE, 3, 4096, 1 << 20),
    "block size max < min": proto.INFO_BLOCK_SIZE.pack(proto.NBD_INFO_BLOCK_SIZE, 4096, 4096,
                                                       512),
    "short NBD_INFO_EXPORT": proto.INFO_EXPORT.pack(proto.NBD_INFO_EXPORT, 1, 1)[:9],
    "no NBD_INFO_EXPORT at all": proto.U16.pack(proto.NBD_INFO_DESCRIPTION) + b"x",
    "description over 4096 bytes": proto.U16.pack(proto.NBD_INFO_DESCRIPTION) + b"d" * 5000,
}


@pytest.mark.parametrize("name", sorted(BAD_INFO))
def test_bad_export_info_is_refused(name: str) -> None:
    out = run_against(_go_then(BAD_INFO[name]), "go", name)
    assert isinstance(out.error, harness.CLEAN), f"{name}: {out.kind}"
