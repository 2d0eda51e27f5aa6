"""Reading an ELF file's dynamic dependencies (DT_NEEDED), without binutils.

The initramfs carries only the shared libraries its programs and Python extension
modules need; this module reads those names from the ``.dynamic`` section so the builder
can follow them, for any architecture (the target is armhf, the host usually amd64).
"""

from __future__ import annotations

import struct
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
ELFCLASS64 = 2
ELFDATA2MSB = 2
SHT_DYNAMIC = 6
DT_NULL = 0
DT_NEEDED = 1


def is_elf(path: Path) -> bool:
    """True if ``path`` is a regular file starting with the ELF magic."""
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as f:
        return f.read(4) == ELF_MAGIC


def needed(path: Path) -> list[str]:
    """The DT_NEEDED sonames of the ELF file at ``path`` (empty for a static binary)."""
    data = path.read_bytes()
    if data[:4] != ELF_MAGIC:
        return []
    wide = data[4] == ELFCLASS64
    end = ">" if data[5] == ELFDATA2MSB else "<"
    if wide:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        sh_fmt, dyn_fmt = end + "IIQQQQIIQQ", end + "qQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        sh_fmt, dyn_fmt = end + "IIIIIIIIII", end + "iI"
    sections = [struct.unpack_from(sh_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    names: list[str] = []
    for sec in sections:
        if sec[1] != SHT_DYNAMIC:
            continue
        offset, size, link = sec[4], sec[5], sec[6]
        strtab_off = sections[link][4]
        step = struct.calcsize(dyn_fmt)
        for pos in range(offset, offset + size, step):
            tag, val = struct.unpack_from(dyn_fmt, data, pos)
            if tag == DT_NULL:
                break
            if tag == DT_NEEDED:
                stop = data.index(b"\0", strtab_off + val)
                names.append(data[strtab_off + val:stop].decode())
    return names
