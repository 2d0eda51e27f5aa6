"""The receive buffer every sans-IO parser reads from.

One ``bytearray`` that keeps its capacity, with a read index and a write index:
consuming moves the read index, feeding copies into the free tail (one memcpy,
no allocation once warm -- a fresh large allocation per recv would cost page
faults), and the unconsumed bytes are moved to the front only when the tail is
too short.  Appends and compaction are amortised O(1): no O(n^2) re-slicing.
Payloads are copied out exactly once, as ``bytes``.

Capacity grows to about twice the largest message plus one feed and stays there;
it never depends on lengths a peer merely claims (parsers check those first).
"""

from __future__ import annotations

import struct
from typing import Any, Final

_INITIAL: Final = 256 * 1024


class ReceiveBuffer:
    """Bytes received but not yet parsed."""

    __slots__ = ("_buf", "_end", "_start")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._start = 0
        self._end = 0

    def __len__(self) -> int:
        return self._end - self._start

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        n = len(data)
        if self._start == self._end:
            self._start = self._end = 0
        if self._end + n > len(self._buf):
            self._make_room(n)
        self._buf[self._end : self._end + n] = data
        self._end += n

    def _make_room(self, n: int) -> None:
        live = self._end - self._start
        if live + n <= len(self._buf) // 2 or (live + n <= len(self._buf) and live < 65536):
            # enough room once the consumed prefix is dropped: move the live bytes down
            self._buf[0:live] = self._buf[self._start : self._end]
        else:
            grown = bytearray(max(_INITIAL, 2 * len(self._buf), 2 * (live + n)))
            grown[0:live] = self._buf[self._start : self._end]
            self._buf = grown
        self._start, self._end = 0, live

    def unpack(self, layout: struct.Struct, offset: int = 0) -> tuple[Any, ...] | None:
        """Decode ``layout`` at ``offset`` past the read position, or None if too short."""
        if self._end - self._start < offset + layout.size:
            return None
        return layout.unpack_from(self._buf, self._start + offset)

    def has(self, n: int) -> bool:
        """At least ``n`` unread bytes are buffered."""
        return self._end - self._start >= n

    def skip(self, n: int) -> None:
        """Consume ``n`` bytes (the caller checked they are there)."""
        self._start += n

    def take(self, n: int) -> bytes:
        """Consume and return ``n`` bytes (the caller checked they are there)."""
        start = self._start
        with memoryview(self._buf) as view:
            data = view[start : start + n].tobytes()
        self._start = start + n
        return data

    def peek(self, n: int, offset: int = 0) -> bytes:
        """Return up to ``n`` bytes at ``offset`` past the read position, not consuming."""
        start = self._start + offset
        return bytes(self._buf[start : min(start + n, self._end)])

    def take_all(self) -> bytes:
        """Consume and return everything buffered."""
        return self.take(len(self))

    @property
    def capacity(self) -> int:
        """Bytes allocated (for memory-bound tests)."""
        return len(self._buf)
