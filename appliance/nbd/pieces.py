"""Cutting a byte range into requests a server accepts: its block-size limits, sans-IO.

proto.md: a client SHOULD NOT send a request longer than the server's maximum block size
(32 MiB when the server sent none), and every offset and length must be a multiple of its
minimum block size.  :func:`piece_size` is the largest piece for an export -- the maximum,
rounded down to the preferred block size where that fits, else to the minimum -- and
:func:`cut` cuts a range at multiples of that size, so every piece after the first starts
on a preferred-block boundary (a request aligned to the minimum stays aligned).
"""

from __future__ import annotations

from collections.abc import Iterator

from appliance.nbd.events import ExportInfo

MAX_SIMPLE_LENGTH = 0xFFFFFFFF  # a length in the compact request header is 32 bits


def max_length(info: ExportInfo) -> int:
    """The longest request the export takes in one piece: its maximum block size (and
    what the request header can carry)."""
    if info.extended_headers:
        return info.max_block_size
    return min(info.max_block_size, MAX_SIMPLE_LENGTH)


def piece_size(info: ExportInfo) -> int:
    """Length of a full piece: :func:`max_length` rounded down to the preferred block size
    when that is no larger, else to the minimum block size."""
    cap = max_length(info)
    grain = info.preferred_block_size if 0 < info.preferred_block_size <= cap else (
        info.min_block_size)
    size = cap - cap % grain if grain > 0 else cap
    return size or cap


def cut(offset: int, length: int, size: int) -> Iterator[tuple[int, int]]:
    """``(offset, length)`` pieces of ``[offset, offset + length)``, each at most ``size``
    bytes, cut at the multiples of ``size``."""
    end = offset + length
    while offset < end:
        stop = min(end, (offset // size + 1) * size)
        yield offset, stop - offset
        offset = stop


def first_piece(offset: int, length: int, size: int) -> int:
    """Length of the first piece :func:`cut` would make (without building the rest)."""
    return min(length, (offset // size + 1) * size - offset)
