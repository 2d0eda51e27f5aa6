"""The sans-IO NBD protocol core: bytes in, events out; no sockets, no threads.

Owns the NBD wire protocol (NetworkBlockDevice/nbd ``doc/proto.md``) for the
agent: fixed newstyle negotiation as a client, the transmission phase as a client
(talking to qemu-nbd / nbdkit) and as a server (serving the kernel's simple
requests through the relay).  Imports only the standard library and
:mod:`appliance.errors`.

Every connection object follows the h11 pattern::

    conn.receive_data(chunk)      # b"" means EOF
    ev = conn.next_event()        # an event, or NEED_DATA (never None)
    sock.sendall(conn.data_to_send())

Flush ``data_to_send()`` after every ``next_event()`` -- parsing a reply may queue
the next option -- and before waiting for more bytes.  Calling ``next_event()``
after a final event (Negotiated, ConnectionClosed) raises LocalProtocolError.
After any exception (ProtocolError: the peer broke the protocol; OptionError:
the server refused what we need; LocalProtocolError: the caller misused the
object) the object is stuck: every further call raises ``LocalProtocolError``.

Negotiation (client)::

    neg = ClientNegotiation("disk", tls=True, meta_contexts=["base:allocation"])
    # loop: send neg.data_to_send(); feed received bytes; handle events:
    #   StartTLS()        -> wrap the socket in TLS, then neg.tls_established()
    #   Negotiated(info)  -> done (mode "go"); neg.trailing_data belongs to transmission
    #   InfoReceived(info) / ExportList(exports) / MetaContextList(export, contexts)
    #                     -> done (other modes); data_to_send() holds NBD_OPT_ABORT,
    #                        send it and close (a later ConnectionClosed is optional)

``ClientNegotiation(export_name="", *, tls=False, structured_replies=True,
extended_headers=True, meta_contexts=(), mode=Mode.GO)``; modes "go", "info",
"list", "list-meta" (``meta_contexts`` are then the queries; none = all).
Extended headers fall back to structured replies, structured replies to simple
ones, NBD_OPT_GO to NBD_OPT_EXPORT_NAME, when the server refuses them.  A server
without TLS while ``tls=True`` is an OptionError; NBD_REP_ERR_TLS_REQD without
``tls`` is an OptionError "server requires TLS; use nbds://".

Transmission (client)::

    tx = ClientTransmission(info)                 # info from Negotiated
    cookie = tx.send(Request(NBD_CMD_READ, offset=0, length=65536))
    sock.sendall(tx.data_to_send())
    # events: ReadData(cookie, offset, data), ReadHole(cookie, offset, length),
    #         BlockStatus(cookie, context_id, context, extents),
    #         ErrorChunk(cookie, error, message, offset),
    #         then exactly one ReplyDone(cookie, command, error, message, offset)
    #         per request (error is an errno value, 0 = success);
    #         ConnectionClosed() on EOF with nothing in flight.

``send`` validates the request against the export (flags, size, block sizes)
and raises LocalProtocolError for an invalid one (``tx.check(request)`` runs the
same checks without sending and without breaking the object); the caller may pass
``Request(cookie=...)`` (must not be in flight) or let it be assigned.
``ClientTransmission(info, assemble_reads=True)`` delivers each successful READ
as a single ReadData covering the whole request (holes filled with zeroes).
``tx.in_flight`` maps cookies to
the requests still awaiting their ReplyDone (the relay replays them after a
reconnect).  Limits: a chunk may not be longer than its request (plus header
fields), block status payloads are capped at 4 MiB, option replies at 64 KiB.

Transmission (server)::

    srv = ServerTransmission(structured_replies=False, extended_headers=False)
    srv.receive_data(chunk); ev = srv.next_event()   # Request (cookie set) | ConnectionClosed
    srv.reply(cookie, error=0, data=b"...")           # simple reply (error = errno)
    srv.reply_data / reply_hole / reply_block_status / reply_error / reply_done  # structured
    sock.sendall(srv.data_to_send())

The server side of negotiation (for tests and hand-made servers) is host-only:
:mod:`appliance.host.nbdserver`.

Wire constants, layouts and error tables live in :mod:`appliance.nbd.proto`.
"""

from appliance.errors import LocalProtocolError, OptionError, ProtocolError, RequestError
from appliance.nbd import proto
from appliance.nbd.events import (
    NEED_DATA,
    BlockStatus,
    ClientNegotiationEvent,
    ClientTransmissionEvent,
    ConnectionClosed,
    ErrorChunk,
    ExportEntry,
    ExportInfo,
    ExportList,
    Extent,
    Extents,
    InfoReceived,
    MetaContextList,
    NeedData,
    Negotiated,
    ReadData,
    ReadHole,
    ReplyDone,
    Request,
    ServerTransmissionEvent,
    StartTLS,
)
from appliance.nbd.negotiation import ClientNegotiation, Mode
from appliance.nbd.proto import (
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_CACHE,
    NBD_CMD_DISC,
    NBD_CMD_FLAG_DF,
    NBD_CMD_FLAG_FAST_ZERO,
    NBD_CMD_FLAG_FUA,
    NBD_CMD_FLAG_NO_HOLE,
    NBD_CMD_FLAG_REQ_ONE,
    NBD_CMD_FLUSH,
    NBD_CMD_READ,
    NBD_CMD_TRIM,
    NBD_CMD_WRITE,
    NBD_CMD_WRITE_ZEROES,
)
from appliance.nbd.server import ServerTransmission
from appliance.nbd.transmission import ClientTransmission

__all__ = [
    "NBD_CMD_BLOCK_STATUS",
    "NBD_CMD_CACHE",
    "NBD_CMD_DISC",
    "NBD_CMD_FLAG_DF",
    "NBD_CMD_FLAG_FAST_ZERO",
    "NBD_CMD_FLAG_FUA",
    "NBD_CMD_FLAG_NO_HOLE",
    "NBD_CMD_FLAG_REQ_ONE",
    "NBD_CMD_FLUSH",
    "NBD_CMD_READ",
    "NBD_CMD_TRIM",
    "NBD_CMD_WRITE",
    "NBD_CMD_WRITE_ZEROES",
    "NEED_DATA",
    "BlockStatus",
    "ClientNegotiation",
    "ClientNegotiationEvent",
    "ClientTransmission",
    "ClientTransmissionEvent",
    "ConnectionClosed",
    "ErrorChunk",
    "ExportEntry",
    "ExportInfo",
    "ExportList",
    "Extent",
    "Extents",
    "InfoReceived",
    "LocalProtocolError",
    "MetaContextList",
    "Mode",
    "NeedData",
    "Negotiated",
    "OptionError",
    "ProtocolError",
    "ReadData",
    "ReadHole",
    "ReplyDone",
    "Request",
    "RequestError",
    "ServerTransmission",
    "ServerTransmissionEvent",
    "StartTLS",
    "proto",
]
