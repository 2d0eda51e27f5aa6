"""Extents, the block-status event's sequence of extents over one decoded array."""

from __future__ import annotations

from array import array

import pytest

from appliance.nbd import Extent, Extents


def test_a_sequence_of_extent_tuples() -> None:
    ex = Extents(array("I", [4096, 0, 8192, 3, 512, 1]))
    assert len(ex) == 3 and ex
    assert ex[0] == Extent(4096, 0) and ex[-1] == Extent(512, 1)
    assert list(ex) == [Extent(4096, 0), Extent(8192, 3), Extent(512, 1)]
    assert ex[1:] == Extents.of([(8192, 3), (512, 1)])
    assert ex[::2] == Extents.of([(4096, 0), (512, 1)])
    assert list(ex.lengths) == [4096, 8192, 512] and list(ex.flags) == [0, 3, 1]
    assert ex.length == 4096 + 8192 + 512
    with pytest.raises(IndexError):
        ex[3]
    assert not Extents() and len(Extents()) == 0 and Extents().length == 0


def test_equal_whatever_the_word_size() -> None:
    a = Extents(array("I", [1, 2]))
    b = Extents.of([Extent(1, 2)])
    assert a == b and hash(a) == hash(b)
    assert a != Extents.of([(1, 3)])
    assert a != (Extent(1, 2),)  # a sequence of extents, not a tuple
    assert repr(a) == "Extents.of([Extent(length=1, flags=2)])"


def test_clip_cuts_the_last_extent_to_fit() -> None:
    ex = Extents.of([(4096, 0), (4096, 3), (4096, 0)])
    assert ex.clip(1 << 20) is ex
    assert ex.clip(12288) is ex
    assert ex.clip(8192) == Extents.of([(4096, 0), (4096, 3)])
    assert ex.clip(5000) == Extents.of([(4096, 0), (904, 3)])
    assert ex.clip(5000).length == 5000
    assert ex.clip(1) == Extents.of([(1, 0)])
    assert ex.clip(0) == Extents()
    assert ex == Extents.of([(4096, 0), (4096, 3), (4096, 0)])  # clip copied, kept ex


def test_odd_words_are_refused() -> None:
    with pytest.raises(ValueError, match="flags word"):
        Extents(array("I", [4096]))
