"""The relay between the kernel's nbd driver and a real NBD server.

* :mod:`~appliance.relay.core` -- the decisions, sans-IO (events in, actions out);
* :mod:`~appliance.relay.split` -- one kernel request sent in pieces (server's maximum);
* :mod:`~appliance.relay.relay` -- the event loop that drives the core: simple NBD to the
  kernel, negotiated NBD (TLS, structured replies, extended headers) to the server;
* :mod:`~appliance.relay.reconnect` -- the reconnect thread (backoff);
* :mod:`~appliance.relay.policy` -- backoff and deadline settings;
* :mod:`~appliance.relay.upstream` -- one negotiated server connection;
* :mod:`~appliance.relay.replicas` -- failover: several read-only replicas, tried in order;
* :mod:`~appliance.relay.serve` -- glue: connect, attach to /dev/nbdN, run the relay.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.relay.core import RelayCore, RelayState, RelayStats
    from appliance.relay.policy import ReconnectPolicy, parse_deadline
    from appliance.relay.relay import Relay
    from appliance.relay.replicas import ReplicaSet
    from appliance.relay.upstream import Connector, Upstream, uri_connector

# Each name is imported from its module on first use (PEP 562), so that the kTLS path,
# which shares only the reconnect policy, does not import the relay itself at boot.
_MODULES = {"RelayCore": "core", "RelayState": "core", "RelayStats": "core",
            "ReconnectPolicy": "policy", "parse_deadline": "policy", "Relay": "relay",
            "ReplicaSet": "replicas", "Connector": "upstream", "Upstream": "upstream",
            "uri_connector": "upstream"}

__all__ = ["Connector", "ReconnectPolicy", "Relay", "RelayCore", "RelayState", "RelayStats",
           "ReplicaSet", "Upstream", "parse_deadline", "uri_connector"]


def __getattr__(name: str) -> object:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    globals()[name] = value
    return value
