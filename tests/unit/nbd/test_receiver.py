"""The shared sticky-error receive loop (appliance.nbd.receiver) in every protocol machine.

After any exception -- the peer broke the protocol, the caller misused the object, or a
parser bug raised something else -- every further call raises LocalProtocolError.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from appliance.errors import LocalProtocolError, ProtocolError
from appliance.host.nbdserver import ServerExport, ServerNegotiation
from appliance.nbd import (
    NBD_CMD_READ,
    ClientNegotiation,
    ClientTransmission,
    Request,
    ServerTransmission,
)
from appliance.nbd.receiver import StickyReceiver
from tests.unit.nbd import wire as w

Machine = StickyReceiver[Any]


def client_negotiation() -> ClientNegotiation:
    return ClientNegotiation("disk")


def server_negotiation() -> ServerNegotiation:
    return ServerNegotiation([ServerExport("disk", 1 << 20)])


def client_transmission() -> ClientTransmission:
    tx = ClientTransmission(w.export())
    tx.send(Request(NBD_CMD_READ, 0, 512))
    return tx


def server_transmission() -> ServerTransmission:
    return ServerTransmission(structured_replies=True)


MACHINES: dict[str, Callable[[], Machine]] = {
    "client-negotiation": client_negotiation,
    "server-negotiation": server_negotiation,
    "client-transmission": client_transmission,
    "server-transmission": server_transmission,
}
# Breaks every machine: no NBDMAGIC, unknown client flags, bad reply or request magic.
GARBAGE = b"\xff" * 64


def further_calls(m: Machine) -> list[Callable[[], object]]:
    calls: list[Callable[[], object]] = [
        lambda: m.receive_data(b"\0"), lambda: m.receive_data(b""), m.next_event]
    if isinstance(m, ClientNegotiation | ServerNegotiation):
        calls.append(m.tls_established)
    if isinstance(m, ClientTransmission):
        calls.append(lambda: m.send(Request(NBD_CMD_READ, 0, 512)))
        calls.append(lambda: m.check(Request(NBD_CMD_READ, 0, 512)))
    if isinstance(m, ServerTransmission):
        calls.append(lambda: m.reply(1))
    return calls


def assert_stuck(m: Machine) -> None:
    for call in further_calls(m):
        with pytest.raises(LocalProtocolError, match="failed earlier"):
            call()
        with pytest.raises(LocalProtocolError, match="failed earlier"):
            call()  # and again: nothing un-sticks it
    if isinstance(m, ClientNegotiation | ServerNegotiation):
        assert m.state == "error"


@pytest.mark.parametrize("make", MACHINES.values(), ids=MACHINES.keys())
def test_a_protocol_error_from_the_peer_sticks(make: Callable[[], Machine]) -> None:
    m = make()
    m.receive_data(GARBAGE)
    with pytest.raises(ProtocolError):
        m.next_event()
    assert_stuck(m)


@pytest.mark.parametrize("make", MACHINES.values(), ids=MACHINES.keys())
def test_feeding_after_eof_is_misuse_and_sticks(make: Callable[[], Machine]) -> None:
    m = make()
    m.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after EOF"):
        m.receive_data(b"\0")
    assert_stuck(m)


@pytest.mark.parametrize("exc", [RuntimeError("a parser bug"), KeyboardInterrupt()],
                         ids=["RuntimeError", "KeyboardInterrupt"])
@pytest.mark.parametrize("make", MACHINES.values(), ids=MACHINES.keys())
def test_any_exception_while_parsing_sticks(make: Callable[[], Machine],
                                            exc: BaseException,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    m = make()
    m.receive_data(b"\0")

    def parse_one() -> bool:
        raise exc

    monkeypatch.setattr(m, "_parse_one", parse_one)
    with pytest.raises(type(exc)):
        m.next_event()
    assert_stuck(m)


@pytest.mark.parametrize("make", [client_negotiation, server_negotiation],
                         ids=["client-negotiation", "server-negotiation"])
def test_tls_established_out_of_turn_sticks(make: Callable[[], Machine]) -> None:
    m = make()
    assert isinstance(m, ClientNegotiation | ServerNegotiation)
    with pytest.raises(LocalProtocolError, match="tls_established"):
        m.tls_established()
    assert_stuck(m)


def test_next_event_after_connection_closed_is_misuse_and_sticks() -> None:
    tx = ServerTransmission()
    tx.receive_data(b"")
    assert type(tx.next_event()).__name__ == "ConnectionClosed"
    with pytest.raises(LocalProtocolError, match="the connection is closed"):
        tx.next_event()
    assert_stuck(tx)
