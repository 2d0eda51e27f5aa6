"""root.mode / root.overlay-size settings and the status of an overlay root (no sockets)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import BootConfig, Config
from appliance.config.validate import parse_root_mode, parse_tmpfs_size
from appliance.status import root_device


def test_defaults_mount_the_export_read_write() -> None:
    boot = BootConfig.typed(Config())
    assert (boot.root_mode, boot.root_overlay_size) == ("rw", "50%")


@pytest.mark.parametrize("text", ["256M", "1G", "512k", "50%", "100%", "1%"])
def test_good_sizes(text: str) -> None:
    assert parse_tmpfs_size(text) == text


@pytest.mark.parametrize("text", ["", "0M", "101%", "12", "1T", "-5M", "50 %", "size=1G"])
def test_bad_sizes_are_one_line_errors(text: str) -> None:
    with pytest.raises(ValueError, match="size with k, M or G"):
        parse_tmpfs_size(text)


def test_root_modes() -> None:
    assert parse_root_mode("overlay") == "overlay"
    with pytest.raises(ValueError, match="rw, overlay"):
        parse_root_mode("ro")


def test_an_overlay_root_reports_the_device_below_it(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("rootfs / rootfs rw 0 0\n"
                      "/dev/nbd0 /run/nbdroot/lower ext4 ro,noatime 0 0\n"
                      "tmpfs /run/nbdroot/rw tmpfs rw,size=65536k 0 0\n"
                      "overlay / overlay rw,lowerdir=/run/nbdroot/lower 0 0\n")
    assert root_device(mounts) == "/dev/nbd0"
    mounts.write_text("/dev/nbd0 / ext4 rw,noatime 0 0\n")
    assert root_device(mounts) == "/dev/nbd0"
