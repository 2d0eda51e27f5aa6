"""Failover between replicas: several servers of one read-only export, tried in order.

``nbd.uri`` (and ``appliance nbd attach``) may name several URIs: replicas serving the
same golden version.  :class:`ReplicaSet` is the relay's connector for them.  Each call
makes one round: it tries the replicas in turn, starting with the one after the replica
last used (the one that just went away), and returns the first that negotiates; when
every one fails, the round raises and the reconnect thread's backoff
(:class:`~appliance.relay.policy.ReconnectPolicy`, the one backoff) waits before the next.

With several replicas every connection also reads the export's first MiB and hands its
SHA-256 (:attr:`Upstream.fingerprint`) to the relay core, which compares it, the size and
the transmission flags against the first connection's before accepting the replica
(:func:`appliance.relay.core.replica_mismatch`).  Several replicas only make sense for a
read-only export (a write to one would not reach the others): the first connection is
refused unless the server says NBD_FLAG_READ_ONLY.  With one URI nothing changes: no
fingerprint, and the core's single-server rules apply.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

from appliance.config import validate
from appliance.errors import ApplianceError, ProtocolError, TransportError, UsageError
from appliance.nbd import (
    NBD_CMD_READ,
    NEED_DATA,
    ClientTransmission,
    ExportInfo,
    ReadData,
    ReplyDone,
    Request,
)
from appliance.nbd.uri import NBDURI
from appliance.relay.upstream import Connector, Upstream, uri_connector

log = logging.getLogger(__name__)

FINGERPRINT_BYTES = 1 << 20  # the first MiB of the export: partition table, boot sector, superblock


def fingerprint(up: Upstream, length: int = FINGERPRINT_BYTES) -> Upstream:
    """``up`` with the SHA-256 of its export's first ``length`` bytes (blocking reads on
    the negotiated socket, before the relay takes it; bytes read past the last reply stay
    in :attr:`Upstream.trailing`)."""
    info = up.info
    tx = ClientTransmission(info, assemble_reads=True)
    total = min(length, info.size)
    step = max(1, min(total, info.max_block_size))
    pending = {tx.send(Request(NBD_CMD_READ, offset=off, length=min(step, total - off))): off
               for off in range(0, total, step)}
    up.sock.sendall(tx.data_to_send())
    chunks: dict[int, bytes] = {}
    data: dict[int, bytes] = {}
    if up.trailing:
        tx.receive_data(up.trailing)
    while pending:
        ev = tx.next_event()
        if ev is NEED_DATA:
            got = up.sock.recv(1 << 20)
            if not got:
                raise TransportError("the server closed the connection while the first MiB "
                                     "was read")
            tx.receive_data(got)
        elif isinstance(ev, ReadData):
            data[ev.cookie] = ev.data
        elif isinstance(ev, ReplyDone):
            off = pending.pop(ev.cookie)
            if not ev.ok:
                raise ProtocolError(f"reading the first MiB failed at offset {off}: "
                                    f"{ev.message or ev.error}")
            chunks[off] = data.pop(ev.cookie, b"")
    digest = hashlib.sha256(b"".join(chunks[o] for o in sorted(chunks))).digest()
    # A server sends nothing unasked in transmission: no bytes are left past the replies.
    return Upstream(up.sock, info, b"", source=up.source, fingerprint=digest)


class ReplicaSet:
    """The relay's connector for ``uris`` (one or more replicas of one export)."""

    def __init__(self, uris: Sequence[NBDURI], *, timeout: float = 10.0) -> None:
        if not uris:
            raise UsageError("no NBD URI given")
        try:
            validate.check_replicas(list(uris))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        self.uris = tuple(uris)
        self._connectors: list[Connector] = [uri_connector(u, timeout=timeout) for u in uris]
        self.current = -1  # index of the replica last returned (-1: none yet)
        self._first = True

    @property
    def several(self) -> bool:
        return len(self.uris) > 1

    @property
    def in_use(self) -> NBDURI | None:
        """The URI of the replica last connected to."""
        return self.uris[self.current] if self.current >= 0 else None

    def __call__(self) -> Upstream:
        """One round over the replicas, from the one after the last used; the first that
        negotiates (and, with several, whose first MiB was read) is returned."""
        n = len(self.uris)
        errors: list[str] = []
        last: ApplianceError | OSError | None = None
        for step in range(1, n + 1):
            i = (self.current + step) % n
            try:
                up = self._connect_one(i)
            except (ApplianceError, OSError) as exc:
                if isinstance(exc, UsageError):
                    raise
                last = exc
                errors.append(f"{self.uris[i].address}: {exc}")
                if n > 1:  # the round's error names every replica; this is for debugging
                    log.debug("replica %s: %s", self.uris[i], exc)
                continue
            self.current = i
            return up
        assert last is not None
        if n == 1:
            raise last
        raise TransportError(f"no replica answered ({'; '.join(errors)})")

    def _connect_one(self, i: int) -> Upstream:
        uri = self.uris[i]
        up = self._connectors[i]()
        up = Upstream(up.sock, up.info, up.trailing, source=str(uri))
        if not self.several:
            return up
        try:
            if self._first:
                _require_read_only(uri, up.info)
            up = fingerprint(up)
        except BaseException:
            up.sock.close()
            raise
        self._first = False
        return up


def _require_read_only(uri: NBDURI, info: ExportInfo) -> None:
    if not info.read_only:
        raise UsageError(f"several replicas need a read-only export, but {uri} is writable "
                         f"(serve it read-only, e.g. qemu-nbd -r, or give one URI)")
