"""One connection for the kernel: TLS-PSK negotiated in Python, the records then the kernel's.

:func:`open_session` runs the client's negotiation (:func:`appliance.client.negotiation.
negotiate`) with ``ssl.OP_ENABLE_KTLS`` on the context, without structured replies or
extended headers (the nbd driver reads only simple replies with compact headers), and
checks what the driver needs before it may have the socket:

* the kernel encrypts *and* decrypts on it (:func:`appliance.ktls.offload.offload_of`):
  a direction left to OpenSSL would feed the driver ciphertext;
* no byte of the transmission phase is already buffered in user space;
* the socket is blocking, with TCP_NODELAY (the transport set it).

A missing offload raises :class:`~appliance.errors.KtlsUnavailable` naming why; a server
that cannot be reached raises the client's one-line NBDError, as the relay's would.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass

from appliance.client.negotiation import negotiate
from appliance.errors import KtlsUnavailable, OffloadRefused, ProtocolError
from appliance.ktls import offload
from appliance.nbd import ExportInfo, Negotiated
from appliance.nbd.uri import NBDURI
from appliance.transport import ConnectPolicy, client_context

log = logging.getLogger(__name__)


@dataclass
class Session:
    """A negotiated connection whose TLS records the kernel now handles.

    ``sock`` is kept open by its owner for as long as the kernel uses the socket: closing
    it only drops this process's reference (the driver holds its own), but keeping it lets
    the supervisor poll it for the driver's shutdown.
    """

    sock: socket.socket
    info: ExportInfo
    offload: offload.Offload

    def close(self) -> None:
        self.sock.close()


def ktls_context(uri: NBDURI) -> ssl.SSLContext:
    """The URI's TLS context with kernel offload asked for (KtlsUnavailable without TLS)."""
    if not uri.tls:
        raise KtlsUnavailable(f"{uri.address}: nbd.path=ktls needs an nbds:// URI (TLS); "
                              "a plaintext root is served by the kernel directly")
    return offload.enable(client_context(uri))


def open_session(uri: NBDURI, ctx: ssl.SSLContext, *, timeout: float = 10.0) -> Session:
    """Connect, negotiate for the kernel and check the offload (one attempt)."""
    result = negotiate(uri, policy=ConnectPolicy(timeout=timeout, attempts=1), context=ctx,
                       structured_replies=False, extended_headers=False)
    sock = result.sock
    try:
        if not isinstance(result.event, Negotiated):
            raise ProtocolError(f"{uri.address}: negotiation ended without an export ({uri})")
        if result.trailing or (isinstance(sock, ssl.SSLSocket) and sock.pending()):
            raise ProtocolError(f"{uri.address}: the server sent data before any request "
                                f"({uri})")
        state = offload.offload_of(sock)
        if not state.complete:
            cipher = _cipher(sock)
            raise OffloadRefused(f"{uri.address}: the kernel did not take over TLS "
                                 f"({cipher}: {state.describe()})", cipher)
        sock.setblocking(True)
    except BaseException:
        sock.close()
        raise
    log.info("%s: %s, export %d bytes", uri.address, state.describe(), result.event.info.size)
    return Session(sock, result.event.info, state)


def _cipher(sock: socket.socket) -> str:
    if isinstance(sock, ssl.SSLSocket):
        got = sock.cipher()
        if got is not None:
            return f"{got[1]} {got[0]}"
    return "no TLS"
