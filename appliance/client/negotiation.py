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

from appliance.deadline import Deadline
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
DEFAULT_TIMEOUT = 10.0  # for a socket without a timeout
BUDGET_FACTOR = 3.0  # whole negotiation / whole wait for a reply, in socket timeouts


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
              extended_headers: bool = True, context: ssl.SSLContext | None = None,
              ) -> Negotiation:
    """Connect to ``uri`` and negotiate in ``mode``; raise a one-line NBDError on failure.

    ``context`` is the TLS context for ``nbds://`` (made from the URI when None); a caller
    that must reconnect after the key file is gone (the relay) makes it once and passes it.
    """
    ctx = context if context is not None or not uri.tls else client_context(uri)
    neg = ClientNegotiation(uri.export, tls=uri.tls, mode=mode, meta_contexts=meta_contexts,
                            structured_replies=structured_replies,
                            extended_headers=extended_headers)
    sock = open_socket(uri, policy)
    try:
        sock, event = drive(neg, sock, ctx, uri)
    except BaseException:
        sock.close()
        raise
    return Negotiation(sock, event, neg.trailing_data if mode == Mode.GO else b"")


def drive(neg: ClientNegotiation, sock: socket.socket, ctx: ssl.SSLContext | None,
          uri: NBDURI, *, budget: float | None = None,
          ) -> tuple[socket.socket, ClientNegotiationEvent]:
    """Run ``neg`` over the connected ``sock`` to its final event (TLS with ``ctx`` when the
    core asks); return the socket (now maybe an SSLSocket) and that event.  The caller
    closes ``sock`` on error.

    The whole negotiation must finish within ``budget`` seconds (default: three times the
    socket's timeout), so a server trickling valid bytes cannot hold us forever.
    """
    timeout = sock.gettimeout() or DEFAULT_TIMEOUT
    budget = budget if budget is not None else BUDGET_FACTOR * timeout
    deadline = Deadline(budget)
    try:
        while True:
            event = neg.next_event()
            out = neg.data_to_send()  # processing input may have queued replies
            if out:
                sock.sendall(out)
            if event is NEED_DATA:
                left = deadline.remaining or 0.0
                if left <= 0:
                    raise TransportError(f"{uri.address}: negotiation took longer than "
                                         f"{budget:g}s (server too slow or stalled) ({uri})")
                sock.settimeout(min(timeout, left))
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
            sock.settimeout(timeout)
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
