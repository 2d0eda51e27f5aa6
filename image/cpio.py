"""Writing a reproducible initramfs: a sorted ``newc`` cpio archive, gzip-compressed.

The archive is written from a directory tree by Python itself, so the result depends
only on the tree's content: entries in sorted path order, owner root:root, every mtime
set to SOURCE_DATE_EPOCH, inode numbers assigned in order, and gzip without a file name
or timestamp (like ``gzip -n``).  Device nodes the kernel needs before devtmpfs is
mounted (``/dev/console``) are added without needing root.
"""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

NEWC_MAGIC = b"070701"
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Node:
    """A device node to add to the archive (path relative to the root, no leading '/')."""

    path: str
    mode: int  # including the file type bits (stat.S_IFCHR | 0o600)
    major: int
    minor: int


def _header(ino: int, mode: int, nlink: int, mtime: int, size: int, name: bytes,
            rdev: tuple[int, int] = (0, 0)) -> bytes:
    fields = (ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    return NEWC_MAGIC + b"".join(b"%08X" % f for f in fields)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _entries(root: Path) -> Iterator[tuple[str, Path]]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            yield path.relative_to(root).as_posix(), path


class _Writer:
    def __init__(self, out: BinaryIO, mtime: int) -> None:
        self.out = out
        self.mtime = mtime
        self.ino = 0

    def entry(self, name: str, mode: int, data: bytes = b"",
              rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        raw = name.encode()
        nlink = 2 if stat.S_ISDIR(mode) else 1
        head = _header(self.ino, mode, nlink, self.mtime, len(data), raw, rdev) + raw + b"\0"
        self.out.write(head + _pad(len(head)) + data + _pad(len(data)))


def write(root: Path, out: BinaryIO, *, mtime: int, nodes: tuple[Node, ...] = ()) -> None:
    """Write the tree at ``root`` (plus ``nodes``) as an uncompressed newc archive."""
    w = _Writer(out, mtime)
    extra = {n.path: n for n in nodes}
    items = sorted([*_entries(root), *((p, None) for p in extra)], key=lambda item: item[0])
    for name, path in items:
        if path is None:
            node = extra[name]
            w.entry(name, node.mode, rdev=(node.major, node.minor))
            continue
        st = path.lstat()
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            w.entry(name, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            w.entry(name, stat.S_IFDIR | perm)
        elif stat.S_ISREG(st.st_mode):
            w.entry(name, stat.S_IFREG | perm, path.read_bytes())
        else:
            raise ValueError(f"{path}: only files, directories and symlinks can be archived")
    w.entry(TRAILER, 0)


def write_gz(root: Path, dest: Path, *, mtime: int, nodes: tuple[Node, ...] = (),
             level: int = 6) -> int:
    """Write ``root`` as ``dest`` (cpio newc + gzip, reproducible); return its size."""
    tmp = dest.with_name(dest.name + ".tmp")
    with tmp.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                              compresslevel=level, mtime=0) as gz:
        write(root, gz, mtime=mtime, nodes=nodes)  # type: ignore[arg-type]
    tmp.replace(dest)
    return dest.stat().st_size
