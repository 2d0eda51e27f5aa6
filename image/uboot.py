"""Booting ``sdcard.img`` through Debian's U-Boot under ``qemu-system-arm -M sabrelite``.

A real SABRE Lite's boot ROM reads U-Boot (an i.MX image: IVT, DCD, then the program)
from SPI NOR, copies it to DDR and jumps to it; U-Boot then finds ``boot.scr`` on the
SD card.  QEMU's sabrelite has no boot ROM, so this module plays its part:

- Debian's ``u-boot-imx`` (armhf) ships ``mx6qsabrelite/u-boot-dtb.imx``: U-Boot with its
  devicetree appended (``devicetree: separate``).  ``-kernel uboot.elf`` loads the ELF
  alone, without that appended DTB, and prints nothing; loading the whole ``.imx`` file
  with QEMU's generic ``loader`` device at the address its IVT names (``self``) puts the
  DTB right after the program, where U-Boot looks for it.  No rebuild with an embedded
  DTB is needed.
- QEMU's i.MX uSDHC model (7.2 and 10.0 alike) only issues SD commands when the SDHCI
  clock-enable bits 0 and 2 of SYSCTL are set; on the real uSDHC they are reserved and
  U-Boot never sets them, so every command times out silently (measured with
  ``-trace 'sdhci_*'``: no command ever reaches the card).  U-Boot only ever updates
  SYSCTL read-modify-write, so setting those bits once before U-Boot starts is enough:
  a 40-byte ARM stub (:func:`rom_stub`), the boot ROM's stand-in, sets them on uSDHC3 and
  uSDHC4 and jumps to U-Boot's entry.  A real board needs no such stub.
- QEMU wants an SD card whose size is a power of two; ``-drive if=sd`` is refused on this
  machine, so the card is ``-drive if=none`` + ``-device sd-card``, which QEMU plugs into
  uSDHC4 (U-Boot's ``mmc 1``, the SABRE Lite's microSD slot).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ImageError
from image.debfetch import AptFetcher, cache_dir, extract

PACKAGE = "u-boot-imx"
BOARD_DIR = "usr/lib/u-boot/mx6qsabrelite"
UBOOT_IMX = "u-boot-dtb.imx"
STUB = "uboot-rom-stub.bin"
IVT_TAG = 0xD1
IVT_VERSIONS = (0x40, 0x41)
USDHC_SYSCTL = (0x0219802C, 0x0219C02C)  # uSDHC3, uSDHC4: SYSCTL (base + 0x2c)
SDHCI_CLOCK_BITS = 0x5  # SDHCI "internal clock enable" | "SD clock enable"
STUB_GAP = 0x1000  # the stub sits this far below U-Boot's image


@dataclass(frozen=True)
class ImxImage:
    """Where an i.MX boot image goes: its load address (IVT ``self``) and entry point."""

    load: int
    entry: int


def parse_ivt(data: bytes) -> ImxImage:
    """The load address and entry of an i.MX6 image from its Image Vector Table."""
    if len(data) < 32:
        raise ImageError("i.MX image too short for an IVT header")
    tag, _length, version, entry, _r1, _dcd, _boot_data, self_addr = struct.unpack_from(
        "<BHBIIIII", data)
    if tag != IVT_TAG or version not in IVT_VERSIONS:
        raise ImageError(f"not an i.MX image: IVT tag {tag:#x} version {version:#x}")
    if not self_addr <= entry < self_addr + len(data):
        raise ImageError(f"i.MX image entry {entry:#x} lies outside the image")
    return ImxImage(load=self_addr, entry=entry)


def _movw(rd: int, imm: int) -> int:
    return 0xE3000000 | ((imm >> 12) & 0xF) << 16 | rd << 12 | (imm & 0xFFF)


def _movt(rd: int, imm: int) -> int:
    return 0xE3400000 | ((imm >> 12) & 0xF) << 16 | rd << 12 | (imm & 0xFFF)


STR_R1_R0 = 0xE5801000  # str r1, [r0]
BX_R2 = 0xE12FFF12  # bx r2


def rom_stub(entry: int, registers: tuple[int, ...] = USDHC_SYSCTL,
             value: int = SDHCI_CLOCK_BITS) -> bytes:
    """ARM code: store ``value`` at each of ``registers``, then jump to ``entry``."""
    words = [_movw(1, value)]
    for reg in registers:
        words += [_movw(0, reg & 0xFFFF), _movt(0, reg >> 16), STR_R1_R0]
    words += [_movw(2, entry & 0xFFFF), _movt(2, entry >> 16), BX_R2]
    return b"".join(struct.pack("<I", w) for w in words)


def fetch_uboot(*, suite: str = "stable") -> Path:
    """Debian's SABRE Lite U-Boot (``u-boot-dtb.imx``), downloaded and unpacked once."""
    fetcher = AptFetcher(suite=suite)
    deb = fetcher.cached(PACKAGE) or fetcher.fetch(PACKAGE)
    tree = cache_dir() / f"unpacked-{deb.stem}"
    target = tree / BOARD_DIR / UBOOT_IMX
    if not target.exists():
        extract(deb, tree, [f"./{BOARD_DIR}/{UBOOT_IMX}"])
    return target


def loader_args(uboot_imx: Path, work: Path) -> tuple[str, ...]:
    """QEMU ``-device loader`` arguments: U-Boot where the ROM would copy it, the stub, PC."""
    image = parse_ivt(uboot_imx.read_bytes())
    stub_addr = image.load - STUB_GAP
    stub = work / STUB
    stub.write_bytes(rom_stub(image.entry))
    return ("-device", f"loader,file={uboot_imx.resolve()},addr={image.load:#x},force-raw=on",
            "-device", f"loader,file={stub.resolve()},addr={stub_addr:#x},force-raw=on",
            "-device", f"loader,addr={stub_addr:#x},cpu-num=0")


def sdcard_args(sdcard: Path) -> tuple[str, ...]:
    """QEMU arguments plugging ``sdcard`` (raw, power-of-two size) into uSDHC4."""
    size = sdcard.stat().st_size
    if size <= 0 or size & (size - 1):
        raise ImageError(f"{sdcard}: QEMU needs an SD card whose size is a power of two "
                         f"({size} bytes)")
    return ("-drive", f"if=none,id=sdcard,format=raw,file={sdcard.resolve()}",
            "-device", "sd-card,drive=sdcard")


def uboot_argv(sdcard: Path, uboot_imx: Path, work: Path, memory: str = "1G") -> list[str]:
    """qemu-system-arm -M sabrelite booting ``sdcard`` through U-Boot (no -kernel)."""
    from image.qemu import SABRELITE, board_argv

    work.mkdir(parents=True, exist_ok=True)
    return [*board_argv(SABRELITE, memory), *loader_args(uboot_imx, work),
            *sdcard_args(sdcard)]
