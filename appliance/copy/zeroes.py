"""Zero detection for ``appliance nbd copy`` (like nbdcopy's ``-S``): which blocks of a
buffer read as zeroes, so that the destination gets holes or WRITE_ZEROES, not data.

Owns the block size of the detection and the scan; blocks are aligned to the absolute
offset in the image, so a run found here lines up with the destination's blocks.
"""

from __future__ import annotations

SPARSE_BLOCK = 4096
_ZEROES = bytes(64 << 20)  # compared against with bytes.startswith (one memcmp per block)


def is_zero(data: bytes | memoryview) -> bool:
    """True when every byte of ``data`` is zero."""
    view = memoryview(data)
    for pos in range(0, len(view), len(_ZEROES)):
        if not _ZEROES.startswith(view[pos:pos + len(_ZEROES)]):
            return False
    return True


def runs(offset: int, data: bytes | memoryview,
         block: int = SPARSE_BLOCK) -> list[tuple[int, int, bool]]:
    """``(offset, length, is_zero)`` runs covering ``data`` (written at ``offset``).

    A run is zero only when it covers whole aligned ``block``-byte blocks of zeroes;
    partial blocks at either end count as data.
    """
    view = memoryview(data).cast("B")
    n = len(view)
    if n == 0:
        return []
    if is_zero(view):
        return [(offset, n, True)]
    first = -offset % block  # start of the first whole block, relative to ``offset``
    out: list[tuple[int, int, bool]] = []
    pos = 0  # start of the run being built
    zero_run = False
    for start in range(first, n - block + 1, block):
        # first byte non-zero: certainly data (a cheap test that skips most data blocks)
        zero = view[start] == 0 and _ZEROES.startswith(view[start:start + block])
        if zero != zero_run:
            if start > pos:
                out.append((offset + pos, start - pos, zero_run))
            pos, zero_run = start, zero
    last_full = first + max(0, (n - first) // block) * block  # end of the last whole block
    if zero_run:
        out.append((offset + pos, last_full - pos, True))
        if n > last_full:
            out.append((offset + last_full, n - last_full, False))
    else:
        out.append((offset + pos, n - pos, False))
    return out
