"""One kernel request carried to the server in pieces, sans-IO: what is left, in flight, done.

The kernel may send a request larger than the server's maximum block size (above all
TRIM and WRITE_ZEROES, which ``max_sectors_kb`` does not bound; and READ/WRITE when the
queue limits could not be lowered).  The relay core then sends it as pieces no longer
than :func:`~appliance.nbd.pieces.piece_size` of the connection in use, at most
:data:`WINDOW` at a time, and answers the kernel once: when every piece succeeded (a READ
with the pieces' data assembled in order), or, after the pieces in flight came back, with
the error of the lowest failed piece.

The ranges still to send are cut only when sent, so a replay after a reconnection cuts
the unfinished ones by the *new* server's limits; finished pieces are never sent again.
"""

from __future__ import annotations

import errno
from collections import deque

from appliance.nbd import (
    NBD_CMD_CACHE,
    NBD_CMD_READ,
    NBD_CMD_TRIM,
    NBD_CMD_WRITE,
    NBD_CMD_WRITE_ZEROES,
    ExportInfo,
    Request,
)
from appliance.nbd.pieces import first_piece, max_length, piece_size

# Commands with a byte range that a server's maximum block size may limit.  FLUSH and DISC
# carry no range and are never split.
SPLITTABLE = frozenset({NBD_CMD_READ, NBD_CMD_WRITE, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES,
                        NBD_CMD_CACHE})
WINDOW = 16  # pieces of one kernel request in flight at once


def needs_split(req: Request, info: ExportInfo) -> bool:
    """``req`` is longer than ``info``'s server takes in one request."""
    return req.command in SPLITTABLE and req.length > max_length(info)


class Split:
    """The pieces of one kernel request (keyed in the core by the kernel's cookie)."""

    __slots__ = ("buf", "cookie", "error", "error_at", "flying", "request", "sent", "todo")

    def __init__(self, request: Request) -> None:
        assert request.cookie is not None
        self.request = request
        self.cookie: int = request.cookie  # the kernel's
        self.todo: deque[tuple[int, int]] = deque([(request.offset, request.length)])
        self.flying: dict[int, tuple[int, int]] = {}  # upstream cookie -> (offset, length)
        self.buf = bytearray(request.length) if request.command == NBD_CMD_READ else None
        self.error = 0
        self.error_at = -1  # offset of the failed piece whose error the kernel gets
        self.sent = 0  # pieces sent, replays included

    @property
    def finished(self) -> bool:
        """Nothing in flight, and nothing left to send (or no point: a piece failed)."""
        return not self.flying and (bool(self.error) or not self.todo)

    def next_piece(self, info: ExportInfo) -> Request | None:
        """The next piece to send on a connection to ``info``'s server, or None (the window
        is full, nothing is left, or a piece failed)."""
        if self.error or not self.todo or len(self.flying) >= WINDOW:
            return None
        offset, length = self.todo[0]
        n = first_piece(offset, length, piece_size(info))
        if n == length:
            self.todo.popleft()
        else:
            self.todo[0] = (offset + n, length - n)
        req = self.request
        data = None
        if req.command == NBD_CMD_WRITE:
            assert req.data is not None
            start = offset - req.offset
            data = memoryview(req.data)[start:start + n]
        return Request(req.command, offset, n, req.flags, None, data)

    def sending(self, cookie: int, piece: Request) -> None:
        """``piece`` (from :meth:`next_piece`) goes out under upstream ``cookie``."""
        self.flying[cookie] = (piece.offset, piece.length)
        self.sent += 1

    def done(self, cookie: int, error: int, data: bytes | bytearray | memoryview = b"") -> None:
        """The piece sent under ``cookie`` completed (a READ piece with ``data``)."""
        offset, length = self.flying.pop(cookie)
        if not error and self.buf is not None:
            if len(data) != length:
                error = errno.EIO
            else:
                start = offset - self.request.offset
                self.buf[start:start + length] = data
        if error:
            self.fail(offset, error)

    def fail(self, offset: int, error: int) -> None:
        """The piece at ``offset`` failed with ``error``: keep the lowest such piece's."""
        if not self.error or offset < self.error_at:
            self.error, self.error_at = error, offset

    def lost(self) -> None:
        """The connection died: the pieces in flight are to be sent again."""
        if not self.flying:
            return
        self.todo.extend(self.flying.values())
        self.todo = deque(sorted(self.todo))
        self.flying.clear()
