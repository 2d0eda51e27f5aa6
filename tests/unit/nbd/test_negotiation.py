"""ClientNegotiation against hand-written server byte streams (proto.md)."""

from __future__ import annotations

import struct

import pytest

from appliance.errors import LocalProtocolError, OptionError, ProtocolError
from appliance.nbd import (
    NEED_DATA,
    ClientNegotiation,
    ConnectionClosed,
    ExportEntry,
    ExportList,
    InfoReceived,
    MetaContextList,
    Mode,
    Negotiated,
    StartTLS,
)
from appliance.nbd.negotiation import MAX_OPTION_REPLY
from tests.unit.nbd import wire as w
from tests.unit.nbd.wire import drain_negotiation as drain

FLAGS = w.F_HAS_FLAGS | w.F_FLUSH | w.F_FUA | w.F_MULTI_CONN
GO_OK = (w.rep(w.OPT_GO, w.REP_INFO, w.info_export(1 << 30, FLAGS))
         + w.rep(w.OPT_GO, w.REP_ACK))


def started(neg: ClientNegotiation, hs_flags: int = 3) -> bytes:
    """Feed the greeting; return what the client sent in answer."""
    assert drain(neg, w.greeting(hs_flags)) == []
    return neg.data_to_send()


def test_initial_state_sends_nothing() -> None:
    neg = ClientNegotiation("disk")
    assert neg.data_to_send() == b""
    assert neg.next_event() is NEED_DATA
    assert neg.state == "greeting"


def test_full_go_wire_vector() -> None:
    """Every byte the client sends and receives for a typical qemu-nbd session."""
    neg = ClientNegotiation("disk", meta_contexts=["base:allocation"])
    assert started(neg) == (struct.pack(">I", 3)
                            + w.option(w.OPT_EXTENDED_HEADERS))
    assert drain(neg, w.rep(w.OPT_EXTENDED_HEADERS, w.REP_ERR_UNSUP)) == []
    assert neg.data_to_send() == w.option(w.OPT_STRUCTURED_REPLY)
    assert drain(neg, w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ACK)) == []
    assert neg.data_to_send() == w.option(w.OPT_SET_META,
                                          w.meta_data("disk", ["base:allocation"]))
    ctx = w.meta_context(7, "base:allocation")
    assert drain(neg, w.rep(w.OPT_SET_META, w.REP_META_CONTEXT, ctx)
                 + w.rep(w.OPT_SET_META, w.REP_ACK)) == []
    assert neg.data_to_send() == w.option(w.OPT_GO, w.go_data("disk"))
    events = drain(neg, w.rep(w.OPT_GO, w.REP_INFO, w.info_block_size(512, 4096, 1 << 25))
                   + w.rep(w.OPT_GO, w.REP_INFO, w.info_export(1 << 30, FLAGS))
                   + w.rep(w.OPT_GO, w.REP_INFO, w.info_name("canonical"))
                   + w.rep(w.OPT_GO, w.REP_INFO, w.info_description("a disk"))
                   + w.rep(w.OPT_GO, w.REP_ACK))
    assert len(events) == 1
    ev = events[0]
    assert isinstance(ev, Negotiated)
    info = ev.info
    assert (info.name, info.size, info.flags) == ("canonical", 1 << 30, FLAGS)
    assert (info.min_block_size, info.preferred_block_size, info.max_block_size) == (
        512, 4096, 1 << 25)
    assert info.description == "a disk"
    assert dict(info.meta_contexts) == {"base:allocation": 7}
    assert info.structured_replies and not info.extended_headers
    assert info.can_flush and info.can_fua and info.can_multi_conn
    assert not info.read_only and not info.can_trim and not info.can_df
    assert info.can_block_status and info.context_name(7) == "base:allocation"
    assert info.block_size_sent
    assert neg.state == "negotiated"
    assert neg.data_to_send() == b""


def test_extended_headers_accepted_skips_structured_reply() -> None:
    neg = ClientNegotiation("")
    started(neg)
    drain(neg, w.rep(w.OPT_EXTENDED_HEADERS, w.REP_ACK))
    assert neg.data_to_send() == w.option(w.OPT_GO, w.go_data(""))
    [ev] = drain(neg, GO_OK)
    assert isinstance(ev, Negotiated)
    assert ev.info.extended_headers and ev.info.structured_replies
    # defaults from proto.md when NBD_INFO_BLOCK_SIZE is not sent
    assert (ev.info.min_block_size, ev.info.preferred_block_size, ev.info.max_block_size) == (
        1, 4096, 32 << 20)
    assert not ev.info.block_size_sent
    assert ev.info.name == ""


def test_no_structured_replies_asked() -> None:
    neg = ClientNegotiation("x", structured_replies=False, meta_contexts=["base:allocation"])
    assert started(neg) == struct.pack(">I", 3) + w.option(w.OPT_GO, w.go_data("x"))
    [ev] = drain(neg, GO_OK)
    assert isinstance(ev, Negotiated)
    assert not ev.info.structured_replies and not ev.info.meta_contexts


def test_structured_refused_means_no_meta_context() -> None:
    neg = ClientNegotiation("x", extended_headers=False, meta_contexts=["base:allocation"])
    assert started(neg).endswith(w.option(w.OPT_STRUCTURED_REPLY))
    drain(neg, w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ERR_UNSUP, b"nope"))
    assert neg.data_to_send() == w.option(w.OPT_GO, w.go_data("x"))
    [ev] = drain(neg, GO_OK)
    assert isinstance(ev, Negotiated)
    assert not ev.info.structured_replies and not ev.info.can_block_status


def test_set_meta_context_refused_is_not_fatal() -> None:
    neg = ClientNegotiation("x", extended_headers=False, meta_contexts=["qemu:dirty-bitmap:b"])
    started(neg)
    drain(neg, w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ACK))
    neg.data_to_send()
    drain(neg, w.rep(w.OPT_SET_META, w.REP_ERR_INVALID, b"bad query"))
    assert neg.data_to_send() == w.option(w.OPT_GO, w.go_data("x"))
    [ev] = drain(neg, GO_OK)
    assert isinstance(ev, Negotiated) and dict(ev.info.meta_contexts) == {}


def test_several_meta_contexts() -> None:
    names = ["base:allocation", "qemu:dirty-bitmap:bm", "qemu:allocation-depth"]
    neg = ClientNegotiation("x", extended_headers=False, meta_contexts=names)
    started(neg)
    drain(neg, w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ACK))
    assert neg.data_to_send() == w.option(w.OPT_SET_META, w.meta_data("x", names))
    drain(neg, w.rep(w.OPT_SET_META, w.REP_META_CONTEXT, w.meta_context(1, names[0]))
          + w.rep(w.OPT_SET_META, w.REP_META_CONTEXT, w.meta_context(2, names[2]))
          + w.rep(w.OPT_SET_META, w.REP_ACK))
    [ev] = drain(neg, GO_OK)
    assert isinstance(ev, Negotiated)
    assert dict(ev.info.meta_contexts) == {names[0]: 1, names[2]: 2}


def test_unknown_info_types_are_skipped() -> None:
    neg = ClientNegotiation("x", structured_replies=False)
    started(neg)
    [ev] = drain(neg, w.rep(w.OPT_GO, w.REP_INFO, struct.pack(">H", 99) + b"future stuff")
                 + w.rep(w.OPT_GO, w.REP_INFO, struct.pack(">H", 4))
                 + GO_OK)
    assert isinstance(ev, Negotiated) and ev.info.size == 1 << 30


@pytest.mark.parametrize("hs_flags", [3, 1])
def test_go_unsupported_falls_back_to_export_name(hs_flags: int) -> None:
    neg = ClientNegotiation("disk", structured_replies=False)
    sent = started(neg, hs_flags)
    assert sent[:4] == struct.pack(">I", hs_flags)  # C_NO_ZEROES only if offered
    drain(neg, w.rep(w.OPT_GO, w.REP_ERR_UNSUP))
    assert neg.data_to_send() == w.option(w.OPT_EXPORT_NAME, b"disk")
    reply = struct.pack(">QH", 12345, w.F_HAS_FLAGS | w.F_READ_ONLY)
    whole = reply + (b"" if hs_flags & 2 else bytes(124))
    assert drain(neg, whole[:-1]) == []
    [ev] = drain(neg, whole[-1:])
    assert isinstance(ev, Negotiated)
    assert ev.info.size == 12345 and ev.info.read_only and ev.info.name == "disk"


def test_plain_newstyle_server_gets_export_name_directly() -> None:
    neg = ClientNegotiation("disk")
    assert started(neg, hs_flags=0) == struct.pack(">I", 0) + w.option(w.OPT_EXPORT_NAME, b"disk")
    [ev] = drain(neg, struct.pack(">QH", 4096, 1) + bytes(124))
    assert isinstance(ev, Negotiated) and ev.info.size == 4096


def test_export_name_refused_by_closing() -> None:
    neg = ClientNegotiation("nosuch", structured_replies=False)
    started(neg)
    drain(neg, w.rep(w.OPT_GO, w.REP_ERR_UNSUP))
    with pytest.raises(OptionError, match="no export named 'nosuch'"):
        drain(neg, eof=True)


def test_trailing_data_after_go_belongs_to_transmission() -> None:
    neg = ClientNegotiation("", structured_replies=False)
    started(neg)
    [ev] = drain(neg, GO_OK + b"\x67\x44")
    assert isinstance(ev, Negotiated)
    assert neg.trailing_data == b"\x67\x44"
    with pytest.raises(LocalProtocolError):
        neg.next_event()


# ------------------------------------------------------------------ TLS


def test_starttls_flow() -> None:
    neg = ClientNegotiation("disk", tls=True, extended_headers=False)
    assert started(neg) == struct.pack(">I", 3) + w.option(w.OPT_STARTTLS)
    [ev] = drain(neg, w.rep(w.OPT_STARTTLS, w.REP_ACK))
    assert isinstance(ev, StartTLS)
    assert neg.data_to_send() == b""
    with pytest.raises(LocalProtocolError, match="tls_established"):
        neg.receive_data(b"\x16\x03\x01")  # raw TLS bytes must not be fed


def test_starttls_then_options_after_handshake() -> None:
    neg = ClientNegotiation("disk", tls=True, extended_headers=False)
    started(neg)
    drain(neg, w.rep(w.OPT_STARTTLS, w.REP_ACK))
    assert not neg.tls_active
    neg.tls_established()
    assert neg.tls_active
    assert neg.data_to_send() == w.option(w.OPT_STRUCTURED_REPLY)
    drain(neg, w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ACK))
    assert neg.data_to_send() == w.option(w.OPT_GO, w.go_data("disk"))
    [ev] = drain(neg, GO_OK)
    assert isinstance(ev, Negotiated) and ev.info.structured_replies


def test_next_event_before_tls_established_is_misuse() -> None:
    neg = ClientNegotiation("disk", tls=True)
    started(neg)
    drain(neg, w.rep(w.OPT_STARTTLS, w.REP_ACK))
    with pytest.raises(LocalProtocolError, match="tls_established"):
        neg.next_event()


@pytest.mark.parametrize("reply", [w.REP_ERR_UNSUP, w.REP_ERR_POLICY, w.REP_ERR_INVALID,
                                   w.REP_ERR_PLATFORM])
def test_server_without_tls_is_refused(reply: int) -> None:
    neg = ClientNegotiation("disk", tls=True)
    started(neg)
    with pytest.raises(OptionError, match=r"does not offer TLS.*refusing to continue without TLS"):
        drain(neg, w.rep(w.OPT_STARTTLS, reply))
    # proto.md: soft disconnect -- NBD_OPT_ABORT is queued
    assert neg.data_to_send() == w.option(w.OPT_ABORT)
    with pytest.raises(LocalProtocolError):
        neg.next_event()


def test_tls_required_without_fixed_newstyle_is_refused() -> None:
    neg = ClientNegotiation("disk", tls=True)
    with pytest.raises(OptionError, match="cannot do TLS"):
        drain(neg, w.greeting(0))


def test_unencrypted_data_after_starttls_ack() -> None:
    neg = ClientNegotiation("disk", tls=True)
    started(neg)
    with pytest.raises(ProtocolError, match="unencrypted"):
        drain(neg, w.rep(w.OPT_STARTTLS, w.REP_ACK) + b"junk")


@pytest.mark.parametrize("opt_index", [0, 1])
def test_tls_reqd_without_tls_says_use_nbds(opt_index: int) -> None:
    neg = ClientNegotiation("disk", extended_headers=False)
    started(neg)
    if opt_index:
        drain(neg, w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ACK))
        opt = w.OPT_GO
    else:
        opt = w.OPT_STRUCTURED_REPLY
    with pytest.raises(OptionError, match="requires TLS; use nbds://") as exc:
        drain(neg, w.rep(opt, w.REP_ERR_TLS_REQD, b"TLS required"))
    assert exc.value.reply == w.REP_ERR_TLS_REQD
    assert "TLS required" in str(exc.value)


def test_tls_reqd_after_tls_is_a_protocol_error() -> None:
    neg = ClientNegotiation("disk", tls=True, structured_replies=False)
    started(neg)
    drain(neg, w.rep(w.OPT_STARTTLS, w.REP_ACK))
    neg.tls_established()
    neg.data_to_send()
    with pytest.raises(ProtocolError, match="although TLS is established"):
        drain(neg, w.rep(w.OPT_GO, w.REP_ERR_TLS_REQD))


# ------------------------------------------------------------------ option errors


@pytest.mark.parametrize(("reply", "message"), [
    (w.REP_ERR_UNKNOWN, "no export named 'disk' on the server"),
    (w.REP_ERR_POLICY, "forbids"),
    (w.REP_ERR_INVALID, "invalid"),
    (w.REP_ERR_PLATFORM, "platform"),
    (w.REP_ERR_SHUTDOWN, "shutting down"),
    (w.REP_ERR_BLOCK_SIZE_REQD, "block sizes"),
    (w.REP_ERR_TOO_BIG, "too big"),
    (w.REP_ERR_EXT_HEADER_REQD, "requires extended headers"),
    (w.ERR + 77, "unknown error reply 0x8000004d"),
])
def test_go_errors_become_option_errors(reply: int, message: str) -> None:
    neg = ClientNegotiation("disk", structured_replies=False)
    started(neg)
    with pytest.raises(OptionError, match=message) as exc:
        drain(neg, w.rep(w.OPT_GO, reply, b"server text\n"))
    assert exc.value.option == w.OPT_GO and exc.value.reply == reply
    assert "server text" in str(exc.value) and "\n" not in str(exc.value)
    assert neg.data_to_send() == w.option(w.OPT_ABORT)


def test_shutdown_during_structured_reply_is_fatal() -> None:
    neg = ClientNegotiation("disk", extended_headers=False)
    started(neg)
    with pytest.raises(OptionError, match="shutting down"):
        drain(neg, w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ERR_SHUTDOWN))


# ------------------------------------------------------------------ other modes


def test_info_mode() -> None:
    neg = ClientNegotiation("disk", mode="info", structured_replies=False)
    assert started(neg) == struct.pack(">I", 3) + w.option(w.OPT_INFO, w.go_data("disk"))
    [ev] = drain(neg, w.rep(w.OPT_INFO, w.REP_INFO, w.info_export(77, 1))
                 + w.rep(w.OPT_INFO, w.REP_ACK))
    assert isinstance(ev, InfoReceived) and ev.info.size == 77
    assert neg.data_to_send() == w.option(w.OPT_ABORT)
    [ev2] = drain(neg, w.rep(w.OPT_ABORT, w.REP_ACK))
    assert isinstance(ev2, ConnectionClosed)
    assert neg.state == "closed"


def test_info_unsupported_is_an_error() -> None:
    neg = ClientNegotiation("disk", mode=Mode.INFO, structured_replies=False)
    started(neg)
    with pytest.raises(OptionError, match="NBD_OPT_INFO failed"):
        drain(neg, w.rep(w.OPT_INFO, w.REP_ERR_UNSUP))


def test_list_mode() -> None:
    neg = ClientNegotiation(mode="list")
    assert started(neg) == struct.pack(">I", 3) + w.option(w.OPT_LIST)
    entry = struct.pack(">I", 4) + b"disk" + b"the disk"
    [ev] = drain(neg, w.rep(w.OPT_LIST, w.REP_SERVER, entry)
                 + w.rep(w.OPT_LIST, w.REP_SERVER, struct.pack(">I", 0))
                 + w.rep(w.OPT_LIST, w.REP_ACK))
    assert ev == ExportList((ExportEntry("disk", "the disk"), ExportEntry("", "")))
    assert neg.data_to_send() == w.option(w.OPT_ABORT)
    [ev2] = drain(neg, eof=True)  # server may close without acking the abort
    assert isinstance(ev2, ConnectionClosed)


def test_list_meta_mode() -> None:
    neg = ClientNegotiation("disk", mode="list-meta", meta_contexts=["qemu:"],
                            extended_headers=False)
    started(neg)
    drain(neg, w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ACK))
    assert neg.data_to_send() == w.option(w.OPT_LIST_META, w.meta_data("disk", ["qemu:"]))
    [ev] = drain(neg, w.rep(w.OPT_LIST_META, w.REP_META_CONTEXT, w.meta_context(0, "qemu:a"))
                 + w.rep(w.OPT_LIST_META, w.REP_META_CONTEXT, w.meta_context(0, "qemu:b"))
                 + w.rep(w.OPT_LIST_META, w.REP_ACK))
    assert ev == MetaContextList("disk", ("qemu:a", "qemu:b"))


def test_modes_need_fixed_newstyle() -> None:
    with pytest.raises(OptionError, match="old newstyle"):
        drain(ClientNegotiation(mode="list"), w.greeting(0))


# ------------------------------------------------------------------ hostile servers


def go_client() -> ClientNegotiation:
    neg = ClientNegotiation("disk", structured_replies=False)
    started(neg)
    return neg


BAD_GO_REPLIES = [
    ("bad reply magic", struct.pack(">QIII", 0x1234, w.OPT_GO, w.REP_ACK, 0), "magic"),
    ("wrong option echoed", w.rep(w.OPT_LIST, w.REP_ACK), "replied to NBD_OPT_LIST"),
    ("huge length", struct.pack(">QIII", w.REP_MAGIC, w.OPT_GO, w.REP_INFO, 1 << 31), "limit"),
    ("ack with data", w.rep(w.OPT_GO, w.REP_ACK, b"x"), "carries 1 bytes"),
    ("ack without export info", w.rep(w.OPT_GO, w.REP_ACK), "without sending NBD_INFO_EXPORT"),
    ("short info", w.rep(w.OPT_GO, w.REP_INFO, b"\x00"), "at least 2"),
    ("export info too long", w.rep(w.OPT_GO, w.REP_INFO, w.info_export(1, 1) + b"\0"),
     "must be 12"),
    ("block size too short", w.rep(w.OPT_GO, w.REP_INFO, w.info_block_size(1, 1, 1)[:-1]),
     "must be 14"),
    ("minimum not a power of two", w.rep(w.OPT_GO, w.REP_INFO, w.info_block_size(3, 4096, 1 << 20)),
     "minimum block size"),
    ("minimum over 64k", w.rep(w.OPT_GO, w.REP_INFO, w.info_block_size(1 << 17, 1 << 17, 1 << 20)),
     "minimum block size"),
    ("preferred below minimum", w.rep(w.OPT_GO, w.REP_INFO, w.info_block_size(4096, 512, 1 << 20)),
     "preferred"),
    ("maximum not a multiple", w.rep(w.OPT_GO, w.REP_INFO, w.info_block_size(512, 4096, 1000)),
     "maximum"),
    ("name not utf-8", w.rep(w.OPT_GO, w.REP_INFO, struct.pack(">H", 1) + b"\xff\xfe"), "UTF-8"),
    ("description too long", w.rep(w.OPT_GO, w.REP_INFO, struct.pack(">H", 2) + b"x" * 5000),
     "4096"),
    ("unexpected reply type", w.rep(w.OPT_GO, w.REP_SERVER, b"\0\0\0\0"), "unexpected"),
    ("meta context reply to go", w.rep(w.OPT_GO, w.REP_META_CONTEXT, w.meta_context(1, "a:b")),
     "unexpected"),
]


@pytest.mark.parametrize(("why", "data", "match"), BAD_GO_REPLIES,
                         ids=[c[0] for c in BAD_GO_REPLIES])
def test_hostile_go_replies(why: str, data: bytes, match: str) -> None:
    neg = go_client()
    with pytest.raises(ProtocolError, match=match):
        drain(neg, data)
    with pytest.raises(LocalProtocolError, match="failed earlier"):
        neg.next_event()
    with pytest.raises(LocalProtocolError):
        neg.receive_data(b"more")


@pytest.mark.parametrize(("data", "match"), [
    (b"HTTP/1.1 400 Bad Request\r\n", "not an NBD server"),
    (b"NBDMAGIC" + struct.pack(">Q", 0x00420281861253) + bytes(8), "oldstyle"),
    (b"NBDMAGIC" + struct.pack(">QH", 0x1111, 1), "bad newstyle magic"),
])
def test_hostile_greetings(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        drain(ClientNegotiation("disk"), data)


def test_eof_before_greeting() -> None:
    with pytest.raises(ProtocolError, match="before finishing its greeting"):
        drain(ClientNegotiation("disk"), b"NBDMA", eof=True)


def test_eof_waiting_for_reply() -> None:
    neg = go_client()
    with pytest.raises(ProtocolError, match="closed the connection while the client waited for "
                                            "the reply to NBD_OPT_GO"):
        drain(neg, w.rep(w.OPT_GO, w.REP_INFO, w.info_export(1, 1))[:10], eof=True)


def test_duplicate_meta_context_ids() -> None:
    neg = ClientNegotiation("x", extended_headers=False, meta_contexts=["a:1", "a:2"])
    started(neg)
    drain(neg, w.rep(w.OPT_STRUCTURED_REPLY, w.REP_ACK))
    with pytest.raises(ProtocolError, match="twice"):
        drain(neg, w.rep(w.OPT_SET_META, w.REP_META_CONTEXT, w.meta_context(1, "a:1"))
              + w.rep(w.OPT_SET_META, w.REP_META_CONTEXT, w.meta_context(1, "a:2")))


def test_list_entry_name_longer_than_reply() -> None:
    neg = ClientNegotiation(mode="list")
    started(neg)
    with pytest.raises(ProtocolError, match="exceeds the reply"):
        drain(neg, w.rep(w.OPT_LIST, w.REP_SERVER, struct.pack(">I", 9) + b"abc"))


def test_too_many_list_entries_are_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("appliance.nbd.negotiation.MAX_OPTION_REPLIES", 5)
    neg = ClientNegotiation(mode="list")
    started(neg)
    entry = w.rep(w.OPT_LIST, w.REP_SERVER, struct.pack(">I", 1) + b"a")
    with pytest.raises(ProtocolError, match="more than 5 replies"):
        drain(neg, entry * 6)


def test_oversized_reply_rejected_from_its_header_alone() -> None:
    neg = go_client()
    header = struct.pack(">QIII", w.REP_MAGIC, w.OPT_GO, w.REP_INFO, MAX_OPTION_REPLY + 1)
    with pytest.raises(ProtocolError, match="limit"):
        drain(neg, header)  # no payload needed to decide


def test_max_size_reply_is_accepted() -> None:
    neg = go_client()
    big = w.rep(w.OPT_GO, w.REP_INFO, struct.pack(">H", 99) + bytes(MAX_OPTION_REPLY - 2))
    [ev] = drain(neg, big + GO_OK)
    assert isinstance(ev, Negotiated)


# ------------------------------------------------------------------ caller misuse


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"export_name": "x" * 5000}, "at most 4096"),
    ({"export_name": "a\0b"}, "NUL"),
    ({"mode": "bogus"}, "unknown negotiation mode"),
    ({"meta_contexts": "base:allocation"}, "not a string"),
])
def test_bad_construction(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(LocalProtocolError, match=match):
        ClientNegotiation(**kwargs)  # type: ignore[arg-type]


def test_tls_established_at_wrong_time() -> None:
    neg = ClientNegotiation("x")
    with pytest.raises(LocalProtocolError):
        neg.tls_established()


def test_receive_after_eof_is_misuse() -> None:
    neg = ClientNegotiation("x")
    neg.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        neg.receive_data(b"x")
