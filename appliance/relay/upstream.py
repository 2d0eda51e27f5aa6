"""The relay's connection to the real server: connect, negotiate, check it is the same export.

Each (re)connection is a fresh TCP/Unix connection, TLS handshake and NBD_OPT_GO through
:func:`appliance.client.negotiation.negotiate`, with a TLS context made once; the relay
asks for structured replies and extended headers and copes with whatever the server
agrees to.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass

from appliance.errors import ProtocolError
from appliance.nbd import ExportInfo, Negotiated
from appliance.nbd.uri import NBDURI
from appliance.transport import ConnectPolicy, client_context


@dataclass
class Upstream:
    """One negotiated connection to the server."""

    sock: socket.socket
    info: ExportInfo
    trailing: bytes = b""
    source: str = ""                  # the URI it came from, for log lines
    fingerprint: bytes | None = None  # SHA-256 of the first MiB (several replicas only)


Connector = Callable[[], Upstream]


def uri_connector(uri: NBDURI, *, timeout: float = 10.0) -> Connector:
    """A connector that makes one attempt per call (the relay does its own backoff).

    The TLS context -- with the PSK read from its file -- is made once, here: after
    switch_root the initramfs that held the key file is gone, and the relay must still be
    able to reconnect.
    """
    from appliance.client.negotiation import negotiate

    policy = ConnectPolicy(timeout=timeout, attempts=1)
    ctx = client_context(uri) if uri.tls else None

    def connect() -> Upstream:
        result = negotiate(uri, policy=policy, context=ctx)
        if not isinstance(result.event, Negotiated):
            result.sock.close()
            raise ProtocolError(f"{uri.address}: negotiation ended without an export ({uri})")
        return Upstream(result.sock, result.event.info, result.trailing)

    return connect
