"""Driving the sans-IO negotiation over a real socket.

Owns one job: connect (with the transport's retry policy), run
:class:`appliance.nbd.ClientNegotiation` to its end -- wrapping the socket in TLS when
the core says :class:`StartTLS` -- and hand back the socket plus the final event.  Every
error leaves here as a one-line :class:`NBDError` naming the server and the URI.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass

from appliance.errors import NBDError, OptionError, ProtocolError, TransportError
from appliance.nbd import (
    NEED_DATA,
    ClientNegotiation,
    ClientNegotiationEvent,
    ConnectionClosed,
    Mode,
    StartTLS,
)
from appliance.nbd.uri import NBDURI
from appliance.transport import ConnectPolicy, client_context, open_socket, start_tls

log = logging.getLogger(__name__)

NEGOTIATION_RECV = 65536


@dataclass
class Negotiation:
    """The result of negotiating: the (maybe TLS) socket, the final event, leftover bytes."""

    sock: socket.socket
    event: ClientNegotiationEvent
    trailing: bytes


def with_uri(exc: NBDError, uri: NBDURI) -> NBDError:
    """The same kind of error with the server address and URI in its message."""
    msg = f"{uri.address}: {exc} ({uri})"
    if isinstance(exc, OptionError):
        return OptionError(msg, option=exc.option, reply=exc.reply)
    return type(exc)(msg)


def lost(uri: NBDURI, exc: OSError | None, when: str) -> TransportError:
    """A TransportError for a connection that broke (``exc`` None = clean EOF)."""
    if exc is None:
        why = "the server closed the connection"
    elif isinstance(exc, TimeoutError):
        why = "timed out waiting for the server"
    else:
        why = f"connection lost ({exc.strerror or exc})"
    return TransportError(f"{uri.address}: {why} {when} ({uri})")


def negotiate(uri: NBDURI, *, mode: Mode = Mode.GO, meta_contexts: Sequence[str] = (),
              policy: ConnectPolicy | None = None, structured_replies: bool = True,
              extended_headers: bool = True) -> Negotiation:
    """Connect to ``uri`` and negotiate in ``mode``; raise a one-line NBDError on failure."""
    ctx = client_context(uri) if uri.tls else None  # bad key files fail before connecting
    neg = ClientNegotiation(uri.export, tls=uri.tls, mode=mode, meta_contexts=meta_contexts,
                            structured_replies=structured_replies,
                            extended_headers=extended_headers)
    sock = open_socket(uri, policy)
    try:
        sock, event = _run(neg, sock, ctx, uri)
    except BaseException:
        sock.close()
        raise
    return Negotiation(sock, event, neg.trailing_data if mode == Mode.GO else b"")


def _run(neg: ClientNegotiation, sock: socket.socket, ctx: ssl.SSLContext | None,
         uri: NBDURI) -> tuple[socket.socket, ClientNegotiationEvent]:
    try:
        while True:
            event = neg.next_event()
            out = neg.data_to_send()  # processing input may have queued replies
            if out:
                sock.sendall(out)
            if event is NEED_DATA:
                neg.receive_data(sock.recv(NEGOTIATION_RECV))
                continue
            if isinstance(event, StartTLS):
                if ctx is None:  # the core asks for TLS only when we asked for it
                    raise ProtocolError("unexpected StartTLS without nbds://")
                sock = start_tls(sock, ctx, uri)
                neg.tls_established()
                continue
            if isinstance(event, ConnectionClosed):
                raise lost(uri, None, "during negotiation")
            final = neg.data_to_send()  # NBD_OPT_ABORT after info/list modes
            if final:
                with contextlib.suppress(OSError):
                    sock.sendall(final)
            return sock, event
    except (TransportError, ProtocolError, OptionError) as exc:
        if isinstance(exc, TransportError) and str(uri) in str(exc):
            raise
        raise with_uri(exc, uri) from None
    except NBDError as exc:
        raise with_uri(exc, uri) from None
    except OSError as exc:
        raise lost(uri, exc, "during negotiation") from None
