"""Disjoint byte ranges, to check that a READ's chunks never overlap and cover it all.

Chunks nearly always arrive in order, so the common case is extending the last
range: O(1).  Out-of-order chunks cost a bisect and a list insert.
"""

from __future__ import annotations

from bisect import bisect_right


class Ranges:
    """A set of disjoint half-open ranges ``[start, end)``, merged when adjacent."""

    __slots__ = ("_ends", "_starts", "total")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self.total = 0

    def add(self, start: int, end: int) -> bool:
        """Add ``[start, end)``; False (and nothing added) if it overlaps a range."""
        starts, ends = self._starts, self._ends
        # fast path: after everything
        i = len(starts) if starts and start >= ends[-1] else bisect_right(starts, start)
        if i and ends[i - 1] > start:
            return False
        if i < len(starts) and starts[i] < end:
            return False
        self.total += end - start
        join_prev = i > 0 and ends[i - 1] == start
        join_next = i < len(starts) and starts[i] == end
        if join_prev and join_next:
            ends[i - 1] = ends[i]
            del starts[i], ends[i]
        elif join_prev:
            ends[i - 1] = end
        elif join_next:
            starts[i] = start
        else:
            starts.insert(i, start)
            ends.insert(i, end)
        return True

    def __len__(self) -> int:
        return len(self._starts)
