"""The client negotiation table (appliance.nbd.client_states): complete, reachable, strict.

What may arrive in each state is written out here from proto.md, independently of the
table, so a row that loses or gains an entry fails.  The walks check the states the
real ClientNegotiation passes through for each mode against hand-written server bytes.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable

import pytest

from appliance.errors import LocalProtocolError, OptionError
from appliance.nbd import ClientNegotiation, proto
from appliance.nbd.client_states import (
    STATE_OF,
    TRANSITIONS,
    Arrival,
    Goto,
    Handler,
    State,
    reply_arrival,
    transition,
)
from tests.unit.nbd import wire as w
from tests.unit.nbd.wire import drain_negotiation as drain

REPLY_TYPES = frozenset({
    Arrival.ACK, Arrival.ACK_WITH_DATA, Arrival.INFO, Arrival.META_CONTEXT, Arrival.SERVER,
    Arrival.OTHER_REPLY, Arrival.ERR_UNSUP, Arrival.ERR_TLS_REQD, Arrival.ERR_SHUTDOWN,
    Arrival.ERR_OTHER})
EOFS = frozenset({Arrival.EOF, Arrival.EOF_MID_MESSAGE})
# States the plan may send an option from (NEXT_OPTION lands in one of them).
PLANNED = frozenset({
    State.STARTTLS_SENT, State.EXTENDED_HEADERS_SENT, State.STRUCTURED_REPLY_SENT,
    State.SET_META_CONTEXT_SENT, State.GO_SENT, State.INFO_SENT, State.LIST_SENT,
    State.LIST_META_CONTEXT_SENT})
# proto.md: after an option the server sends replies (any type, a liar any length) or
# closes; the greeting and the NBD_OPT_EXPORT_NAME reply are fixed-size; during the TLS
# handshake only the caller speaks; final states take nothing.
MAY_ARRIVE: dict[State, frozenset[Arrival]] = {
    State.GREETING: frozenset({Arrival.GREETING_FIXED, Arrival.GREETING_PLAIN}) | EOFS,
    State.TLS_HANDSHAKE: frozenset({Arrival.TLS_ESTABLISHED}),
    State.EXPORT_NAME_REPLY: frozenset({Arrival.EXPORT_NAME_DATA}) | EOFS,
    **{state: REPLY_TYPES | EOFS for state in PLANNED | {State.ABORTING}},
    State.NEGOTIATED: frozenset(),
    State.CLOSED: frozenset(),
    State.ERROR: frozenset(),
}


def test_what_may_arrive_is_written_for_every_state() -> None:
    assert set(MAY_ARRIVE) == set(State)


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.value)
def test_the_table_is_complete_for_each_state(state: State) -> None:
    assert set(TRANSITIONS[state]) == MAY_ARRIVE[state]


def test_every_state_is_reachable_from_the_greeting() -> None:
    seen, todo = set(), [State.GREETING]
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        for _handler, target in TRANSITIONS[state].values():
            todo.extend(PLANNED if target is Goto.NEXT_OPTION else [target])
    assert seen == set(State)


def test_next_option_lands_in_a_state_for_each_planned_option() -> None:
    assert {STATE_OF[opt] for opt in (
        proto.NBD_OPT_STARTTLS, proto.NBD_OPT_EXTENDED_HEADERS, proto.NBD_OPT_STRUCTURED_REPLY,
        proto.NBD_OPT_SET_META_CONTEXT, proto.NBD_OPT_GO, proto.NBD_OPT_INFO,
        proto.NBD_OPT_LIST, proto.NBD_OPT_LIST_META_CONTEXT)} == PLANNED


def test_every_handler_is_used_and_has_a_method() -> None:
    used = {handler for row in TRANSITIONS.values() for handler, _ in row.values()}
    assert used == set(Handler)
    for handler in Handler:
        assert callable(getattr(ClientNegotiation, f"_on_{handler.value}"))


@pytest.mark.parametrize("reply", [*proto.Rep, 0, 5, 0x7FFF_FFFF, proto.NBD_REP_FLAG_ERROR,
                                   proto.NBD_REP_FLAG_ERROR + 99, 0xFFFF_FFFF])
def test_every_reply_type_is_something_that_may_arrive(reply: int) -> None:
    assert reply_arrival(reply, 0) in REPLY_TYPES
    assert reply_arrival(reply, 10) in REPLY_TYPES
    errors = REPLY_TYPES - {Arrival.ACK, Arrival.ACK_WITH_DATA, Arrival.INFO,
                            Arrival.META_CONTEXT, Arrival.SERVER, Arrival.OTHER_REPLY}
    assert (reply_arrival(reply, 0) in errors) == bool(reply & proto.NBD_REP_FLAG_ERROR)


def test_an_ack_with_data_is_told_apart() -> None:
    assert reply_arrival(proto.NBD_REP_ACK, 0) is Arrival.ACK
    assert reply_arrival(proto.NBD_REP_ACK, 1) is Arrival.ACK_WITH_DATA


MISSING = [(state, arrival) for state in State for arrival in Arrival
           if arrival not in TRANSITIONS[state]]


@pytest.mark.parametrize(("state", "arrival"), MISSING,
                         ids=[f"{s.value}-{a.name}" for s, a in MISSING])
def test_a_missing_entry_raises_local_protocol_error_naming_the_state(
        state: State, arrival: Arrival) -> None:
    expected = rf"^{re.escape(arrival.value)} .*in state {state.value}$"
    with pytest.raises(LocalProtocolError, match=expected):
        transition(state, arrival)


def test_tls_established_out_of_turn_names_the_state_and_sticks() -> None:
    neg = ClientNegotiation("disk")
    drain(neg, w.greeting())
    assert neg.state == "extended-headers-sent"
    with pytest.raises(LocalProtocolError, match=r"tls_established\(\) .*in state "
                                                 r"extended-headers-sent$"):
        neg.tls_established()
    assert neg.state == "error"
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        neg.next_event()


# ------------------------------------------------------------------ walks

FLAGS = w.F_HAS_FLAGS | w.F_FLUSH
Step = bytes | Callable[[ClientNegotiation], None]


def walk(neg: ClientNegotiation, steps: list[Step]) -> list[str]:
    """Feed each step (bytes, b"" = EOF, or a call) and record the state after it."""
    states = [neg.state]
    for step in steps:
        if callable(step):
            step(neg)
        elif step:
            drain(neg, step)
        else:
            drain(neg, eof=True)
        states.append(neg.state)
    return states


def go_ok(opt: int) -> bytes:
    return w.rep(opt, w.REP_INFO, w.info_export(1 << 20, FLAGS)) + w.rep(opt, w.REP_ACK)


def test_walk_go_over_tls_with_a_context() -> None:
    neg = ClientNegotiation("disk", tls=True, meta_contexts=["base:allocation"])
    assert walk(neg, [
        w.greeting(),
        w.rep(w.OPT_STARTTLS, w.REP_ACK),
        ClientNegotiation.tls_established,
        w.rep(w.OPT_EXTENDED_HEADERS, w.REP_ACK),  # makes STRUCTURED_REPLY moot
        w.rep(w.OPT_SET_META, w.REP_META_CONTEXT, w.meta_context(1, "base:allocation")),
        w.rep(w.OPT_SET_META, w.REP_ACK),
        go_ok(w.OPT_GO),
    ]) == ["greeting", "starttls-sent", "tls-handshake", "extended-headers-sent",
           "set-meta-context-sent", "set-meta-context-sent", "go-sent", "negotiated"]


def test_walk_falls_back_to_structured_replies_then_export_name() -> None:
    neg = ClientNegotiation("disk")
    assert walk(neg, [
        w.greeting(),
        w.rep(w.OPT_EXTENDED_HEADERS, w.REP_ERR_UNSUP),
        w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ERR_POLICY),
        w.rep(w.OPT_GO, w.REP_ERR_UNSUP),
        struct.pack(">QH", 1 << 20, FLAGS),  # NBD_FLAG_NO_ZEROES was offered: no zeroes
    ]) == ["greeting", "extended-headers-sent", "structured-reply-sent", "go-sent",
           "export-name-reply", "negotiated"]


def test_walk_plain_newstyle_goes_straight_to_export_name() -> None:
    neg = ClientNegotiation("disk")
    assert walk(neg, [w.greeting(0), struct.pack(">QH", 1 << 20, FLAGS) + bytes(124)]) == [
        "greeting", "export-name-reply", "negotiated"]


@pytest.mark.parametrize(("mode", "state", "replies"), [
    ("info", "info-sent", go_ok(w.OPT_INFO)),
    ("list", "list-sent", w.rep(w.OPT_LIST, w.REP_SERVER, b"\0\0\0\4disk")
     + w.rep(w.OPT_LIST, w.REP_ACK)),
    ("list-meta", "list-meta-context-sent",
     w.rep(w.OPT_LIST_META, w.REP_META_CONTEXT, w.meta_context(0, "base:allocation"))
     + w.rep(w.OPT_LIST_META, w.REP_ACK)),
])
@pytest.mark.parametrize("end", [b"", w.rep(w.OPT_ABORT, w.REP_ACK)], ids=["eof", "ack"])
def test_walk_query_modes_abort_then_close(mode: str, state: str, replies: bytes,
                                            end: bytes) -> None:
    neg = ClientNegotiation("disk", mode=mode, structured_replies=False)
    assert walk(neg, [w.greeting(), replies, end]) == ["greeting", state, "aborting", "closed"]
    assert neg.data_to_send().endswith(w.option(w.OPT_ABORT))
    with pytest.raises(LocalProtocolError, match=r"negotiation is over \(closed\)"):
        neg.next_event()


def test_a_refusal_ends_in_error_with_the_abort_queued() -> None:
    neg = ClientNegotiation("disk", structured_replies=False)
    drain(neg, w.greeting())
    neg.data_to_send()
    assert neg.state == "go-sent"
    with pytest.raises(OptionError, match="no export named 'disk'"):
        drain(neg, w.rep(w.OPT_GO, w.REP_ERR_UNKNOWN))
    assert neg.state == "error"
    assert neg.data_to_send() == w.option(w.OPT_ABORT)
