"""A small reader of newc cpio archives, for inspecting the initramfs in tests."""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    name: str
    mode: int
    uid: int
    gid: int
    mtime: int
    rdev: tuple[int, int]
    data: bytes


def read(raw: bytes) -> list[Entry]:
    """Every entry of an uncompressed newc archive, trailer excluded."""
    entries: list[Entry] = []
    pos = 0
    while True:
        assert raw[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        f = [int(raw[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name_start = pos + 110
        name = raw[name_start:name_start + namesize - 1].decode()
        data_start = name_start + namesize + (-(110 + namesize) % 4)
        data = raw[data_start:data_start + filesize]
        pos = data_start + filesize + (-filesize % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append(Entry(name, f[1], f[2], f[3], f[5], (f[9], f[10]), data))


def read_gz(path: Path) -> list[Entry]:
    return read(gzip.decompress(path.read_bytes()))
