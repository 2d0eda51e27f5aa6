"""Walk an export's block status from start to end with several requests in flight.

Owns the windows of ``appliance nbd info --map``: the export is asked about in
``window``-byte pieces, ``depth`` of them in flight at once (so the server works out the
next piece while the client reads the last), and the answers come back in order.  A
reply that describes less than its window is followed up for the rest before the walk
moves on; every follow-up starts further on, so the walk ends.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from appliance.errors import ProtocolError
from appliance.nbd import (
    NBD_CMD_BLOCK_STATUS,
    BlockStatus,
    ClientTransmissionEvent,
    Extents,
    Request,
)

from .connection import Connection

WINDOW = 1 << 30
DEPTH = 4


class _Window:
    """One BLOCK_STATUS request and the extents its reply brought for ``context``."""

    def __init__(self, conn: Connection, context: str, offset: int, length: int) -> None:
        self.offset, self.length, self.context = offset, length, context
        self.extents = Extents()
        self.done = False
        self.cookie = conn.submit(Request(NBD_CMD_BLOCK_STATUS, offset, length), self._chunk)

    def _chunk(self, ev: ClientTransmissionEvent) -> None:
        if type(ev) is BlockStatus and ev.context == self.context:
            self.extents = ev.extents


def walk(conn: Connection, context: str, *, window: int = WINDOW,
         depth: int = DEPTH) -> Iterator[tuple[int, Extents]]:
    """Yield ``(offset, extents)`` in order until the extents cover the whole export.

    Extents are clipped to their window (servers may describe past what was asked), so
    they never overlap and never run past the end of the export.  RequestError if a
    request fails, ProtocolError if a reply that succeeded has no extents for ``context``.
    """
    size = conn.info.size
    planned = 0  # where the next window starts
    queue: deque[_Window] = deque()
    while True:
        while len(queue) < depth and planned < size:
            n = min(window, size - planned)
            queue.append(_Window(conn, context, planned, n))
            planned += n
        if not queue:
            return
        head = queue[0]
        while not head.done:
            for c in conn.wait():
                if not c.done.ok:
                    raise conn.error_for(c)
                for w in queue:
                    if w.cookie == c.done.cookie:
                        w.done = True
        queue.popleft()
        if not head.extents:
            raise ProtocolError(f"{conn.uri.address}: no {context} extents at offset "
                                f"{head.offset} ({conn.uri})")
        extents = head.extents.clip(head.length)
        covered = extents.length
        yield head.offset, extents
        if covered < head.length:  # described less than asked: ask again for the rest
            queue.appendleft(_Window(conn, context, head.offset + covered,
                                     head.length - covered))
