"""Byte transport to NBD servers: sockets (TCP, Unix) and TLS around them.

Imports point inward: this package uses :mod:`appliance.nbd.uri`, the PSK-file module
:mod:`appliance.config.psk` and the error hierarchy, never the other way round.
"""

from appliance.transport.connect import ConnectPolicy, open_socket
from appliance.transport.tls import client_context, start_tls

__all__ = ["ConnectPolicy", "client_context", "open_socket", "start_tls"]
