"""``appliance nbd info --map``: an export's extents, printed as nbdinfo prints them.

Owns the rows: adjacent extents of one type merged into a single row (as nbdinfo
does), nbdinfo's text layout (``%10d  %10d  %3d  DESCRIPTION``) and its ``--json``
layout byte for byte, written as the walk goes, in large chunks.

A map can have millions of rows, so no Python code runs per extent: the columns are
arrays and lists built by C-level calls (``accumulate``, ``compress``, ``map`` over a
bound method, slice assignment), and each chunk of rows is formatted by one ``%`` on
one tuple.  The text of a type (and its description) and of a length is made once per
distinct value in a chunk; an offset of ten digits or more needs no padding, so it
takes ``%d``, which CPython formats a good deal faster than ``%10d``.
"""

from __future__ import annotations

import bisect
import itertools
import json
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from appliance.errors import ApplianceError
from appliance.nbd import Extents

BASE_ALLOCATION = "base:allocation"
DIRTY_BITMAP = "qemu:dirty-bitmap:"
ALLOCATION_DEPTH = "qemu:allocation-depth"
_BASE_NAMES = {0: "data", 1: "hole", 2: "zero", 3: "hole,zero"}
_DIRTY_NAMES = {0: "clean", 1: "dirty"}

CHUNK_ROWS = 1 << 16  # rows formatted and written at once


def describe(context: str, flags: int) -> str | None:
    """nbdinfo's description of an extent's flags in ``context``; None: it prints none."""
    if context == BASE_ALLOCATION:
        return _BASE_NAMES.get(flags)
    if context.startswith(DIRTY_BITMAP):
        return _DIRTY_NAMES.get(flags)
    if context == ALLOCATION_DEPTH:
        return {0: "absent", 1: "local"}.get(flags, f"backing depth {flags}")
    return None


@dataclass(frozen=True)
class _Layout:
    """One output format: a row is ``row % (offset, length text, type text)``."""

    row: str  # for offsets below ``wide``
    wide_row: str  # for offsets of ``wide`` or more, which need no padding
    wide: int
    length: str  # formats a length
    head: str  # before the first row
    foot: str  # after the last row
    sep: int  # characters of separator in front of each row, dropped from the first

    def tail(self, flags: int, description: str | None) -> str:
        """The text of a row after its length."""
        if self.head:  # JSON
            named = "" if description is None else (
                f', "description": {json.dumps(description, ensure_ascii=False)}')
            return f', "type": {flags}{named}}}'
        return f"  {flags:3}" + ("" if description is None else f"  {description}") + "\n"


TEXT = _Layout(row="%10d  %s%s", wide_row="%d  %s%s", wide=10**9, length="%10d",
               head="", foot="", sep=0)
JSON = _Layout(row=',\n{ "offset": %d, "length": %s%s', wide_row="", wide=0, length="%d",
               head="[\n", foot="\n]\n", sep=2)


class _Tails(dict[int, str]):
    """A row's text after its length, for each type, made when the type is first seen."""

    def __init__(self, layout: _Layout, context: str) -> None:
        super().__init__()
        self.layout, self.context = layout, context

    def __missing__(self, flags: int) -> str:
        tail = self[flags] = self.layout.tail(flags, describe(self.context, flags))
        return tail


class MapWriter:
    """Merges extents into rows and writes them to ``out`` as nbdinfo lays them out.

    Call :meth:`add` with the walk's extents in order, then :meth:`finish`.  A row is
    written once the next type is known (the last one by finish), so every row is a
    whole run of one type even across block-status replies.
    """

    def __init__(self, out: TextIO, context: str, *, as_json: bool = False) -> None:
        self._out = out
        self._layout = JSON if as_json else TEXT
        self._tails = _Tails(self._layout, context)
        self._first = True  # no row written yet
        self._start = 0  # the open run: where it starts, its type (None: no run yet)
        self._type: int | None = None
        self._end = 0  # where the extents added so far end
        self._write(self._layout.head)

    def add(self, offset: int, extents: Extents) -> None:
        """The extents at ``offset``, which must be where the last ones ended."""
        if offset != self._end:
            raise ValueError(f"extents at {offset}, after extents ending at {self._end}")
        runs = self._runs(offset, extents)
        if runs is None:  # nothing new, or all of it continues the open run
            return
        offsets, sizes, kinds = runs
        if self._type is not None:  # the open run ends where the first new one starts
            self._rows([self._start], [offsets[0] - self._start], [self._type])
        self._rows(offsets, sizes, kinds)  # all but the last run, which stays open
        self._start, self._type = offsets[-1], kinds[-1]

    def finish(self) -> None:
        """Write the last row (and JSON's closing bracket)."""
        if self._type is not None:
            self._rows([self._start], [self._end - self._start], [self._type])
            self._type = None
        self._write(self._layout.foot)
        try:
            self._out.flush()
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise _write_error(exc) from None

    def _runs(self, offset: int, extents: Extents,
              ) -> tuple[Sequence[int], Sequence[int], Sequence[int]] | None:
        """Where the runs of one type that start in ``extents`` start, the lengths of all
        but the last (still open) one, and their types; None if no run starts there."""
        types = extents.flags
        if not types:
            return None
        lengths = extents.lengths
        starts = list(itertools.accumulate(lengths, initial=offset))
        self._end = starts.pop()
        if types[0] != self._type and all(map(operator.ne, types, types[1:])):
            return starts, lengths[:-1], types  # each extent is a run of its own
        # Extent i starts a run where its type differs from the one before it.
        new = list(itertools.compress(range(len(types)), map(
            operator.ne, types, itertools.chain((self._type,), types))))
        if not new:
            return None
        offsets = list(map(starts.__getitem__, new))
        return offsets, list(map(operator.sub, offsets[1:], offsets)), list(
            map(types.__getitem__, new))

    def _rows(self, offsets: Sequence[int], sizes: Sequence[int], kinds: Sequence[int]) -> None:
        """Rows ``zip(offsets, sizes, kinds)``: as many as ``sizes`` holds; the offsets
        go up."""
        layout, tail = self._layout, self._tails.__getitem__
        for at in range(0, len(sizes), CHUNK_ROWS):
            end = min(at + CHUNK_ROWS, len(sizes))
            lengths = sizes[at:end]
            length_text = {n: layout.length % n for n in set(lengths)}
            fields: list[object] = [None] * (3 * (end - at))  # interleaved by slice assignment
            fields[0::3] = offsets[at:end]
            fields[1::3] = map(length_text.__getitem__, lengths)
            fields[2::3] = map(tail, kinds[at:end])
            narrow = bisect.bisect_left(offsets, layout.wide, at, end) - at if layout.wide else (
                end - at)
            text = (layout.row * narrow + layout.wide_row * (end - at - narrow)) % tuple(fields)
            if self._first:
                text = text[layout.sep:]
                self._first = False
            self._write(text)

    def _write(self, text: str) -> None:
        if not text:
            return
        try:
            self._out.write(text)
        except BrokenPipeError:  # the reader went away: the CLI's quiet exit
            raise
        except OSError as exc:
            raise _write_error(exc) from None


def _write_error(exc: OSError) -> ApplianceError:
    return ApplianceError(f"cannot write the map: {exc.strerror or exc}")
