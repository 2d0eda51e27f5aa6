"""The U-Boot boot path's pieces: Debian's real i.MX image, the boot-ROM stub, QEMU args."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from appliance.errors import ImageError
from image import uboot


@pytest.fixture(scope="module")
def uboot_imx() -> Path:
    return uboot.fetch_uboot()


def test_debian_uboot_ivt_names_load_address_and_entry(uboot_imx: Path) -> None:
    data = uboot_imx.read_bytes()
    image = uboot.parse_ivt(data)
    # mx6qsabrelite: CONFIG_TEXT_BASE 0x17800000, IVT + DCD in the 3 KiB before it
    assert image.entry == 0x17800000
    assert image.load == image.entry - 0xC00
    # devicetree: separate -- the DTB follows the program inside the .imx file
    assert data.find(b"\xd0\x0d\xfe\xed") > image.entry - image.load


def test_parse_ivt_refuses_what_is_not_an_imx_image(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"not an i\.MX image"):
        uboot.parse_ivt(bytes(64))
    with pytest.raises(ImageError, match="too short"):
        uboot.parse_ivt(b"\xd1")
    outside = struct.pack("<BHBIIIII", 0xD1, 0x2000, 0x40, 0x30000000, 0, 0, 0, 0x10000000)
    with pytest.raises(ImageError, match="outside the image"):
        uboot.parse_ivt(outside + bytes(32))


def test_rom_stub_is_the_expected_arm_code() -> None:
    words = struct.unpack("<10I", uboot.rom_stub(0x17800000))
    assert words == (
        0xE3001005,  # movw r1, #5
        0xE308002C, 0xE3400219, 0xE5801000,  # movw r0, #0x802c; movt r0, #0x219; str r1, [r0]
        0xE30C002C, 0xE3400219, 0xE5801000,  # movw r0, #0xc02c; movt r0, #0x219; str r1, [r0]
        0xE3002000, 0xE3412780, 0xE12FFF12,  # movw r2, #0; movt r2, #0x1780; bx r2
    )


def test_qemu_args_load_uboot_stub_and_sd_card(uboot_imx: Path, tmp_path: Path) -> None:
    card = tmp_path / "sdcard.img"
    card.write_bytes(b"")
    with card.open("r+b") as f:
        f.truncate(128 * 2**20)
    argv = uboot.uboot_argv(card, uboot_imx, tmp_path)
    assert "-kernel" not in argv and argv[:3] == ["qemu-system-arm", "-M", "sabrelite"]
    devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
    assert f"loader,file={uboot_imx.resolve()},addr=0x177ff400,force-raw=on" in devices
    assert "loader,addr=0x177fe400,cpu-num=0" in devices
    assert "sd-card,drive=sdcard" in devices
    assert (tmp_path / uboot.STUB).read_bytes() == uboot.rom_stub(0x17800000)


def test_sd_card_size_must_be_a_power_of_two(tmp_path: Path) -> None:
    card = tmp_path / "sdcard.img"
    with card.open("wb") as f:
        f.truncate(97 * 2**20)
    with pytest.raises(ImageError, match="power of two"):
        uboot.sdcard_args(card)
