"""ClientNegotiation paired in memory with ServerNegotiation, then transmission."""

from __future__ import annotations

import pytest

from appliance.errors import OptionError, ProtocolError
from appliance.host.nbdserver import ClientChoseExport, ServerExport, ServerNegotiation
from appliance.nbd import (
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_READ,
    NEED_DATA,
    BlockStatus,
    ClientNegotiation,
    ConnectionClosed,
    ExportEntry,
    ExportList,
    Extent,
    Extents,
    InfoReceived,
    MetaContextList,
    Negotiated,
    ReadData,
    ReplyDone,
    Request,
    ServerTransmission,
    StartTLS,
)
from appliance.nbd.transmission import ClientTransmission
from tests.unit.nbd.wire import drain

DISK = ServerExport("disk", 1 << 20, description="the disk", block_sizes=(512, 4096, 1 << 20),
                    meta_contexts=("base:allocation", "qemu:dirty-bitmap:b"))
SCRATCH = ServerExport("scratch", 4096)


def run(client: ClientNegotiation, server: ServerNegotiation,
        max_rounds: int = 50) -> tuple[list[object], list[object]]:
    """Shuttle bytes both ways until both sides stop producing; handle StartTLS."""
    c_events: list[object] = []
    s_events: list[object] = []
    c_done = s_done = False
    for _ in range(max_rounds):
        moved = False
        out = server.data_to_send()
        if out and not c_done:
            client.receive_data(out)
            moved = True
        while not c_done and (ev := client.next_event()) is not NEED_DATA:
            c_events.append(ev)
            if isinstance(ev, StartTLS):
                client.tls_established()  # "TLS" in memory: the bytes stay plain
            elif not isinstance(ev, (InfoReceived, ExportList, MetaContextList)):
                c_done = True
        out = client.data_to_send()
        if out and not s_done:
            server.receive_data(out)
            moved = True
        while not s_done and (ev := server.next_event()) is not NEED_DATA:
            s_events.append(ev)
            if isinstance(ev, StartTLS):
                server.tls_established()
            else:
                s_done = True
        if not moved:
            return c_events, s_events
    raise AssertionError("negotiation did not settle")


@pytest.mark.parametrize("tls", [False, True])
@pytest.mark.parametrize("extended", [False, True])
def test_go_and_transmission(tls: bool, extended: bool) -> None:
    client = ClientNegotiation("disk", tls=tls, meta_contexts=["base:allocation"],
                               extended_headers=extended)
    server = ServerNegotiation([DISK, SCRATCH], tls=tls)
    c_events, s_events = run(client, server)
    assert [type(e) for e in c_events] == [*([StartTLS] if tls else []), Negotiated]
    assert [type(e) for e in s_events] == [*([StartTLS] if tls else []), ClientChoseExport]
    info = c_events[-1].info  # type: ignore[attr-defined]
    chosen = s_events[-1]
    assert isinstance(chosen, ClientChoseExport) and chosen.export is DISK
    assert (info.size, info.description, info.min_block_size) == (1 << 20, "the disk", 512)
    assert info.extended_headers == extended == chosen.extended_headers
    assert info.structured_replies and chosen.structured_replies
    assert dict(info.meta_contexts) == dict(chosen.meta_contexts) == {"base:allocation": 1}

    tx = ClientTransmission(info)
    srv = ServerTransmission(structured_replies=chosen.structured_replies,
                             extended_headers=chosen.extended_headers)
    r = tx.send(Request(NBD_CMD_READ, 512, 1024))
    b = tx.send(Request(NBD_CMD_BLOCK_STATUS, 0, 4096))
    srv.receive_data(tx.data_to_send())
    assert srv.next_event() == Request(NBD_CMD_READ, 512, 1024, 0, r)
    assert srv.next_event() == Request(NBD_CMD_BLOCK_STATUS, 0, 4096, 0, b)
    srv.reply(r, data=b"x" * 1024)
    srv.reply_block_status(b, 1, [Extent(4096, 0)], done=True)
    assert drain(tx, srv.data_to_send()) == [
        ReadData(r, 512, b"x" * 1024), ReplyDone(r, NBD_CMD_READ),
        BlockStatus(b, 1, "base:allocation", Extents.of([Extent(4096, 0)])),
        ReplyDone(b, NBD_CMD_BLOCK_STATUS)]


def test_old_server_fallbacks() -> None:
    """No GO, no structured replies: the client still connects via EXPORT_NAME."""
    client = ClientNegotiation("scratch", meta_contexts=["base:allocation"])
    server = ServerNegotiation([SCRATCH], structured_replies=False, go=False, no_zeroes=False)
    c_events, s_events = run(client, server)
    [neg] = c_events
    assert isinstance(neg, Negotiated)
    assert neg.info.size == 4096 and not neg.info.structured_replies
    assert not neg.info.meta_contexts
    assert isinstance(s_events[0], ClientChoseExport)


def test_structured_but_no_extended() -> None:
    client = ClientNegotiation("disk", meta_contexts=["base:allocation"])
    server = ServerNegotiation([DISK], extended_headers=False)
    [neg], _ = run(client, server)
    assert isinstance(neg, Negotiated)
    assert neg.info.structured_replies and not neg.info.extended_headers


def test_forced_tls_server_and_plain_client() -> None:
    client = ClientNegotiation("disk")
    server = ServerNegotiation([DISK], tls_required=True)
    with pytest.raises(OptionError, match="requires TLS; use nbds://"):
        run(client, server)


def test_tls_wanted_but_server_has_none() -> None:
    client = ClientNegotiation("disk", tls=True)
    server = ServerNegotiation([DISK])
    with pytest.raises(OptionError, match="refusing to continue without TLS"):
        run(client, server)
    # the client's soft disconnect reaches the server
    server.receive_data(client.data_to_send())
    assert isinstance(server.next_event(), ConnectionClosed)


def test_unknown_export() -> None:
    with pytest.raises(OptionError, match="no export named 'nope'"):
        run(ClientNegotiation("nope"), ServerNegotiation([DISK]))


def test_unknown_export_with_export_name_fallback() -> None:
    client = ClientNegotiation("nope", structured_replies=False)
    server = ServerNegotiation([DISK], go=False)
    with pytest.raises(ProtocolError, match="may not have"):
        run(client, server)


def test_list_info_list_meta() -> None:
    [ev, closed], _ = run(ClientNegotiation(mode="list"), ServerNegotiation([DISK, SCRATCH]))
    assert ev == ExportList((ExportEntry("disk", "the disk"), ExportEntry("scratch")))
    assert isinstance(closed, ConnectionClosed)
    [ev, _], _ = run(ClientNegotiation("scratch", mode="info"), ServerNegotiation([SCRATCH]))
    assert isinstance(ev, InfoReceived) and ev.info.size == 4096
    [ev, _], _ = run(ClientNegotiation("disk", mode="list-meta", meta_contexts=["qemu:"]),
                     ServerNegotiation([DISK]))
    assert ev == MetaContextList("disk", ("qemu:dirty-bitmap:b",))
    [ev, _], _ = run(ClientNegotiation("disk", mode="list-meta"), ServerNegotiation([DISK]))
    assert ev == MetaContextList("disk", ("base:allocation", "qemu:dirty-bitmap:b"))


# ------------------------------------------------------------------ hostile clients

OPT = b"IHAVEOPT"


@pytest.mark.parametrize(("stream", "match"), [
    (b"\0\0\0\x04", "client flags"),
    (b"\0\0\0\x03" + b"NOTANOPT" + bytes(8), "bad option magic"),
    (b"\0\0\0\x03" + OPT + b"\0\0\0\x07\0\x01\0\x01", "limit"),
    (b"\0\0\0\x03" + OPT + b"\0\0\0\x07\0\0\0\x02" + b"\0\0", "length field"),
    (b"\0\0\0\x03" + OPT + b"\0\0\0\x07\0\0\0\x06" + b"\0\0\0\x09\0\0", "overruns"),
    (b"\0\0\0\x03" + OPT + b"\0\0\0\x07\0\0\0\x07" + b"\0\0\0\0\0\x01\0", "do not fit"),
    (b"\0\0\0\x03" + OPT + b"\0\0\0\x01\0\0\0\x02" + b"\xff\xfe", "not UTF-8"),
    (b"\0\0\0\x03" + OPT + b"\0\0\0", "mid-message"),
])
def test_hostile_clients(stream: bytes, match: str) -> None:
    server = ServerNegotiation([DISK])
    server.receive_data(stream)
    server.receive_data(b"")
    with pytest.raises(ProtocolError, match=match):
        while server.next_event() is not NEED_DATA:
            pass


def test_unknown_option_is_unsupported() -> None:
    server = ServerNegotiation([DISK])
    server.data_to_send()
    server.receive_data(b"\0\0\0\x03" + OPT + b"\0\0\0\x63\0\0\0\0")
    assert server.next_event() is NEED_DATA
    assert server.data_to_send() == (b"\0\x03\xe8\x89\x04\x55\x65\xa9" + b"\0\0\0\x63"
                                     + b"\x80\0\0\x01" + b"\0\0\0\0")
