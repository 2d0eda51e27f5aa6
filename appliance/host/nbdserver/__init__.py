"""Host-only NBD server pieces (tests and hand-made servers; never on the board).

:mod:`.negotiation` is the server side of fixed newstyle negotiation, sans-IO, built on
the board layer's core (:mod:`appliance.nbd`); the transmission side the relay needs,
:class:`appliance.nbd.ServerTransmission`, stays in the core.
"""

from appliance.host.nbdserver.negotiation import (
    ClientChoseExport,
    ServerExport,
    ServerNegotiation,
    ServerNegotiationEvent,
)

__all__ = ["ClientChoseExport", "ServerExport", "ServerNegotiation", "ServerNegotiationEvent"]
