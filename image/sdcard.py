"""The SD-card image for a real SABRE Lite: an MBR disk with one ext4 boot partition.

The board's U-Boot (in SPI NOR) scans the SD card's first partition for ``boot.scr``;
the partition holds ``boot.scr`` (compiled from ``image/files/boot.cmd`` with mkimage),
the kernel, the DTBs and the initramfs.  The MBR is written here, byte by byte, so no
partitioning tool (or root) is needed; the partition is made by ``mke2fs -d``.
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
from pathlib import Path

from image.rootfs import make_ext4
from image.run import run
from image.spec import ImageSpec

FILES = Path(__file__).with_name("files")
SDCARD = "sdcard.img"
BOOT_SCR = "boot.scr"
SECTOR = 512
PART_START = 2048  # 1 MiB: aligned for SD erase blocks
PART_SIZE = 96 * 2**20
DISK_SIZE = 128 * 2**20  # a power of two: QEMU's sd-card refuses other sizes
CONFIG_ARCHIVE = "nbdroot-config.cpio.gz"  # optional; boot.scr appends it to the initramfs
PART_TYPE_LINUX = 0x83
DISK_SIGNATURE = 0x6E626472  # "nbdr"
BOOT_UUID = uuid.uuid5(uuid.NAMESPACE_URL, "nbdroot-imx6/boot")


def mbr(start: int, sectors: int, ptype: int = PART_TYPE_LINUX,
        signature: int = DISK_SIGNATURE) -> bytes:
    """A 512-byte MBR with one bootable partition (LBA ``start``, ``sectors`` long)."""
    chs_max = b"\xfe\xff\xff"  # CHS fields unused: LBA only
    entry = struct.pack("<B3sB3sII", 0x80, chs_max, ptype, chs_max, start, sectors)
    table = entry + bytes(16 * 3)
    return bytes(440) + struct.pack("<IH", signature, 0) + table + b"\x55\xaa"


def boot_script(dest: Path, epoch: int) -> None:
    """Compile boot.cmd into a U-Boot script image."""
    run(["mkimage", "-A", "arm", "-O", "linux", "-T", "script", "-C", "none",
         "-n", "nbdroot-imx6 boot", "-d", FILES / "boot.cmd", dest],
        env={"SOURCE_DATE_EPOCH": str(epoch)})


def build(out: Path, image_spec: ImageSpec, *, epoch: int) -> list[str]:
    """Write boot.scr and sdcard.img into ``out``; return their names."""
    boot_script(out / BOOT_SCR, epoch)
    write_sdcard(out, out / SDCARD, image_spec.dtbs, epoch=epoch)
    return [BOOT_SCR, SDCARD]


def write_sdcard(out: Path, dest: Path, dtbs: tuple[str, ...] | list[str], *, epoch: int,
                 extra: dict[str, Path] | None = None) -> Path:
    """An SD card image with the boot files of ``out`` (and ``extra``: name -> file).

    With ``extra`` (a board's settings archive, holding its key) the image is created 0600.
    """
    work = dest.parent / f".{dest.name}.work"
    boot = work / "boot"
    if work.exists():
        shutil.rmtree(work)
    boot.mkdir(parents=True)
    for name in ("vmlinuz", "initramfs.cpio.gz", BOOT_SCR, *dtbs):
        shutil.copyfile(out / name, boot / name)
    shutil.copyfile(FILES / "boot.cmd", boot / "boot.cmd")
    for name, src in (extra or {}).items():
        shutil.copyfile(src, boot / name)
    part = work / "boot.ext4"
    make_ext4(boot, part, epoch=epoch, size=PART_SIZE, label="boot", fs_uuid=BOOT_UUID)
    dest.unlink(missing_ok=True)
    mode = 0o600 if extra else 0o644  # extra files are the board's settings, with its key
    with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as disk:
        disk.write(mbr(PART_START, PART_SIZE // SECTOR))
        disk.seek(PART_START * SECTOR)
        with part.open("rb") as src_part:
            while chunk := src_part.read(2**20):
                if chunk.count(0) == len(chunk):
                    disk.seek(len(chunk), 1)  # keep the image sparse
                else:
                    disk.write(chunk)
        disk.truncate(DISK_SIZE)
    shutil.rmtree(work)
    return dest
