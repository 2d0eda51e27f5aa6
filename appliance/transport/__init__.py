"""Byte transport to NBD servers: sockets (TCP, Unix) and TLS around them.

Imports point inward: this package uses :mod:`appliance.nbd.uri` and the error
hierarchy, never the other way round.
"""

from appliance.transport.connect import ConnectPolicy, open_socket
from appliance.transport.tls import PSKey, client_context, read_psk_file, start_tls

__all__ = ["ConnectPolicy", "PSKey", "client_context", "open_socket", "read_psk_file",
           "start_tls"]
