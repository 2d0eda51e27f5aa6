"""The real board's boot path: Debian's U-Boot boots ``sdcard.img`` to the NBD root.

Real QEMU -M sabrelite without ``-kernel``: Debian's ``u-boot-dtb.imx`` is loaded where
the boot ROM would put it (see image/uboot.py), the SD card is the built ``sdcard.img``
with the board's settings added to its boot partition; U-Boot's distro boot finds
``boot.scr`` on ``mmc 1``, loads kernel, DTB and initramfs, and the agent mounts the root
from real qemu-nbd over TLS-PSK on 127.0.0.1.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from appliance.host import demo
from image.qemu import QemuBoard
from tests.figures import figure

pytestmark = [pytest.mark.slow, pytest.mark.system]

BOOT_TIMEOUT = 480.0
EOL = rb"\r?\n"


def line(text: str) -> bytes:
    """A whole console line that is exactly ``text``."""
    return rb"(?<![^\n])" + re.escape(text).encode() + EOL


def test_uboot_boots_the_sd_card_to_the_nbd_root(image_dir: Path, tmp_path: Path) -> None:
    root = demo.overlay(image_dir / "rootfs.ext4", tmp_path / "root.qcow2")
    with demo.serve_root(root, tmp_path, lambda text: print(f"root: {text}")) as (port, key):
        settings = demo.settings_for(demo.guest_uri(port), key, 1)
        board = QemuBoard(demo.uboot_boot_argv(image_dir, tmp_path, settings),
                          tmp_path / "console.log")
        board.start()
        try:
            banner = board.expect(rb"(?<![^\n])U-Boot (20\d\d\.\d\d\S*) \([^\r\n]*\)" + EOL, 120)
            board.expect(line("Found U-Boot script /boot.scr"), 180)
            initrd_size = (image_dir / "initramfs.cpio.gz").stat().st_size
            board.expect(rb"(?<![^\n])" + str(initrd_size).encode() + rb" bytes read in [^\r\n]*"
                         + EOL, 240)
            board.expect(line("Starting kernel ..."), 120)
            kernel = time.monotonic() - board.started
            ok = board.expect(demo.ROOT_OK.pattern + rb"[^\r\n]*" + EOL, BOOT_TIMEOUT)
            booted = time.monotonic() - board.started
        finally:
            board.stop()
    assert banner.group(1).startswith(b"20")
    assert ok.group(1) == b"/dev/nbd0"
    out = board.output
    # the agent ran every step, from the config boot.scr appended to the initramfs
    assert "config (" in out and demo.guest_uri(port) in out
    assert "relay (" in out and "FAILED" not in out
    figure(f"U-Boot boot: QEMU start to 'Starting kernel': {kernel:.1f} s")
    figure(f"U-Boot boot: QEMU start to the NBD root's status line: {booted:.1f} s")
