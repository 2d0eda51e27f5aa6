"""``info --map`` rows (appliance.cli.nbd_map): merging, nbdinfo's layouts byte for byte,
write errors.  Checked against a plain per-row rendering of what nbdinfo's map.c prints."""

from __future__ import annotations

import errno
import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.cli import nbd_map
from appliance.cli.nbd_map import MapWriter, describe
from appliance.errors import ApplianceError
from appliance.nbd import Extents


def reference(windows: list[list[tuple[int, int]]], context: str, as_json: bool) -> str:
    """One row per run of equal types, printed row by row as nbdinfo does."""
    rows: list[list[int]] = []
    offset = 0
    for window in windows:
        for length, flags in window:
            if rows and rows[-1][2] == flags:
                rows[-1][1] += length
            else:
                rows.append([offset, length, flags])
            offset += length
    out = []
    for o, n, t in rows:
        d = describe(context, t)
        if as_json:
            named = "" if d is None else f', "description": {json.dumps(d)}'
            out.append(f'{{ "offset": {o}, "length": {n}, "type": {t}{named}}}')
        else:
            out.append(f"{o:10}  {n:10}  {t:3}" + ("" if d is None else f"  {d}") + "\n")
    return "[\n" + ",\n".join(out) + "\n]\n" if as_json else "".join(out)


def render(windows: list[list[tuple[int, int]]], context: str, as_json: bool) -> str:
    out = io.StringIO()
    w = MapWriter(out, context, as_json=as_json)
    offset = 0
    for window in windows:
        extents = Extents.of(window)
        w.add(offset, extents)
        offset += extents.length
    w.finish()
    return out.getvalue()


def test_text_rows_as_nbdinfo_prints_them() -> None:
    windows = [[(4096, 3), (4096, 0), (8192, 0)], [(512, 0), (1 << 40, 1)]]
    assert render(windows, "base:allocation", False) == (
        "         0        4096    3  hole,zero\n"
        "      4096       12800    0  data\n"
        "     16896  1099511627776    1  hole\n")


def test_json_rows_as_nbdinfo_prints_them() -> None:
    assert render([[(4096, 0), (4096, 2)]], "base:allocation", True) == (
        '[\n{ "offset": 0, "length": 4096, "type": 0, "description": "data"},\n'
        '{ "offset": 4096, "length": 4096, "type": 2, "description": "zero"}\n]\n')
    assert render([], "base:allocation", True) == "[\n\n]\n"  # nbdinfo on an empty export
    assert render([], "base:allocation", False) == ""


def test_descriptions_per_context() -> None:
    assert render([[(512, 1), (512, 2), (512, 0)]], "qemu:allocation-depth", False) == (
        "         0         512    1  local\n"
        "       512         512    2  backing depth 2\n"
        "      1024         512    0  absent\n")
    assert render([[(512, 1), (512, 2)]], "qemu:dirty-bitmap:b0", False) == (
        "         0         512    1  dirty\n"
        "       512         512    2\n")  # no description: none printed, as nbdinfo
    assert render([[(512, 7)]], "x:y", True) == (
        '[\n{ "offset": 0, "length": 512, "type": 7}\n]\n')


def test_offsets_of_ten_digits_and_more() -> None:
    big = 10**9 - 1000
    windows = [[(big, 0), (1000, 3), (1, 0), (10**10, 3), (5, 0)]]
    for as_json in (False, True):
        assert render(windows, "base:allocation", as_json) == reference(
            windows, "base:allocation", as_json)


def test_a_window_of_one_type_continues_the_run() -> None:
    windows = [[(4096, 0)], [(4096, 0), (4096, 0)], [(4096, 0)], [(512, 3)], [(512, 3)]]
    assert render(windows, "base:allocation", False) == (
        "         0       16384    0  data\n"
        "     16384        1024    3  hole,zero\n")


def test_chunks_of_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nbd_map, "CHUNK_ROWS", 3)
    windows = [[(100 + i, i % 3) for i in range(10)], [(7, 2), (7, 1), (10**9, 0)]]
    for as_json in (False, True):
        assert render(windows, "base:allocation", as_json) == reference(
            windows, "base:allocation", as_json)


extents = st.lists(st.tuples(st.integers(1, 1 << 33), st.integers(0, 4)), min_size=1,
                   max_size=30)


@settings(max_examples=200, deadline=None)
@given(st.lists(extents, max_size=6), st.booleans(),
       st.sampled_from(["base:allocation", "qemu:allocation-depth", "other:ctx"]))
def test_same_as_row_by_row(windows: list[list[tuple[int, int]]], as_json: bool,
                            context: str) -> None:
    assert render(windows, context, as_json) == reference(windows, context, as_json)


def test_extents_must_follow_on() -> None:
    w = MapWriter(io.StringIO(), "base:allocation")
    w.add(0, Extents.of([(4096, 0)]))
    with pytest.raises(ValueError, match="after extents ending at 4096"):
        w.add(8192, Extents.of([(4096, 0)]))


class Full(io.StringIO):
    def write(self, s: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")


class Gone(io.StringIO):
    def write(self, s: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


def test_write_errors() -> None:
    w = MapWriter(Full(), "base:allocation")
    with pytest.raises(ApplianceError, match=r"^cannot write the map: No space left on device$"):
        w.add(0, Extents.of([(4096, 0), (4096, 3)]))
        w.finish()
    with pytest.raises(BrokenPipeError):  # the CLI's quiet exit for a reader gone away
        MapWriter(Gone(), "base:allocation", as_json=True)
