"""Blocking NBD client: connect to a URI, negotiate, then read/write/copy.

Owns the I/O around the sans-IO core for the CLI and the copy engine::

    with connect("nbds://alice@127.0.0.1/disk?tls-psk-file=keys.psk") as c:
        c.info.size; c.pread(0, 4096); c.submit(Request(...), handler); c.wait()

and the one-shot queries ``export_info``, ``list_exports`` and ``list_meta_contexts``.
"""

from __future__ import annotations

from collections.abc import Sequence

from appliance.errors import ProtocolError
from appliance.nbd import (
    ExportEntry,
    ExportInfo,
    ExportList,
    InfoReceived,
    MetaContextList,
    Mode,
    Negotiated,
)
from appliance.nbd.uri import NBDURI, parse_uri
from appliance.transport import ConnectPolicy

from .connection import Completion, Connection
from .negotiation import Negotiation, drive, negotiate

__all__ = ["Completion", "ConnectPolicy", "Connection", "Negotiation", "connect", "drive",
           "export_info", "list_exports", "list_meta_contexts", "negotiate"]


def _uri(uri: NBDURI | str) -> NBDURI:
    return uri if isinstance(uri, NBDURI) else parse_uri(uri)


def _unexpected(uri: NBDURI, event: object) -> ProtocolError:
    return ProtocolError(f"{uri.address}: negotiation ended with {event!r} ({uri})")


def connect(uri: NBDURI | str, *, meta_contexts: Sequence[str] = (),
            policy: ConnectPolicy | None = None, structured_replies: bool = True,
            extended_headers: bool = True) -> Connection:
    """Connect and negotiate (NBD_OPT_GO); the connection is ready for requests."""
    u = _uri(uri)
    n = negotiate(u, mode=Mode.GO, meta_contexts=meta_contexts, policy=policy,
                  structured_replies=structured_replies, extended_headers=extended_headers)
    if not isinstance(n.event, Negotiated):
        n.sock.close()
        raise _unexpected(u, n.event)
    return Connection(n.sock, n.event.info, u, n.trailing)


def export_info(uri: NBDURI | str, *, policy: ConnectPolicy | None = None) -> ExportInfo:
    """The export's size, flags, block sizes and description (NBD_OPT_INFO)."""
    u = _uri(uri)
    n = negotiate(u, mode=Mode.INFO, policy=policy)
    n.sock.close()
    if not isinstance(n.event, InfoReceived):
        raise _unexpected(u, n.event)
    return n.event.info


def list_exports(uri: NBDURI | str, *, policy: ConnectPolicy | None = None,
                 ) -> tuple[ExportEntry, ...]:
    """The server's exports with descriptions (NBD_OPT_LIST)."""
    u = _uri(uri)
    n = negotiate(u, mode=Mode.LIST, policy=policy)
    n.sock.close()
    if not isinstance(n.event, ExportList):
        raise _unexpected(u, n.event)
    return n.event.exports


def list_meta_contexts(uri: NBDURI | str, queries: Sequence[str] = (), *,
                       policy: ConnectPolicy | None = None) -> tuple[str, ...]:
    """Metadata contexts the export offers (NBD_OPT_LIST_META_CONTEXT; no query = all)."""
    u = _uri(uri)
    n = negotiate(u, mode=Mode.LIST_META, meta_contexts=queries, policy=policy)
    n.sock.close()
    if not isinstance(n.event, MetaContextList):
        raise _unexpected(u, n.event)
    return n.event.contexts
