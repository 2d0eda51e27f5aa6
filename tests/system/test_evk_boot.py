"""The agent boots the i.MX6UL EVK (``-M mcimx6ul-evk``) from a TLS-PSK NBD root.

Real QEMU 7.2 with its two FECs, the real image, a real qemu-nbd (TLS-PSK) on the
host's 127.0.0.1.  The board is detected from the devicetree (imx6ul-evk profile):
both PHYs sit on ENET2's MDIO bus, and the board step must report the PHY it chose
there (address 1 or 2) before the root comes up over NBD through the relay.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from appliance.host import demo
from board.profile import device_name, get_profile
from image.qemu import ConsoleTimeout, QemuBoard
from tests.figures import figure
from tests.system.agent_boot import BOOT_TIMEOUT, served_root

pytestmark = [pytest.mark.slow, pytest.mark.system]

EVK = "imx6ul-evk"
ETH0_DEVICE = re.compile(r"fec (\S+) eth0: registered")
ETH0_PHY = re.compile(r"attached PHY driver \(mii_bus:phy_addr=(\S+)-\d+:(\d+),")
BOARD_STEP = re.compile(rb"nbdroot: \[[ \d.]+s\] board \([\d.]+s\): ([^\r\n]*)\r?\n")


def check_profile_matches_kernel(console: str, reported: int) -> None:
    """The profile's eth0 is the FEC the kernel named eth0, with the PHY it attached."""
    port = get_profile(EVK).port("eth0")
    device = ETH0_DEVICE.search(console)
    attached = ETH0_PHY.search(console)
    assert device is not None and attached is not None, console[-3000:]
    assert device_name(port.fec) == device.group(1), (port, device.group(0))
    assert (port.mdio_owner, port.phy) == (attached.group(1), int(attached.group(2))), (
        port, attached.group(0))
    assert reported == port.phy


def test_evk_boots_agent_from_nbd(image_dir: Path, tmp_path: Path) -> None:
    with served_root(image_dir, tmp_path) as root:
        settings = demo.settings_for(root.guest_uri, root.key, 1)
        initrd = demo.board_initrd(image_dir, tmp_path, settings)
        board = QemuBoard(demo.boot_argv(image_dir, initrd, "mcimx6ul-evk"),
                          tmp_path / "console.log")
        board.start()
        try:
            failed = b"|".join(p.pattern for p in (BOARD_STEP, demo.FAILED_STEP,
                                                   demo.BOOT_FAILED))
            step = board.expect(failed, BOOT_TIMEOUT)
            assert BOARD_STEP.match(step.group(0)), board.tail()
            detail = step.group(1).decode()
            assert "NXP i.MX6UL 14x14 EVK" in detail, detail
            phy = re.search(r"PHY (\S+) address (\d+)", detail)
            assert phy is not None, detail
            assert phy.group(1) == "20b4000.ethernet", detail
            assert int(phy.group(2)) in (1, 2), detail
            try:
                end = board.expect(b"|".join(p.pattern for p in (
                    demo.ROOT_OK, demo.FAILED_STEP, demo.BOOT_FAILED)), BOOT_TIMEOUT)
            except ConsoleTimeout:
                pytest.fail(f"no root within {BOOT_TIMEOUT:.0f} s:\n{board.tail(3000)}")
            took = time.monotonic() - board.started
            ok = demo.ROOT_OK.search(end.group(0))
            assert ok is not None, board.tail(3000)
            assert ok.group(1) == b"/dev/nbd0"
            check_profile_matches_kernel(board.output, int(phy.group(2)))
            figure(f"evk boot (mcimx6ul-evk, QEMU start -> root on NBD): {took:.1f} s; "
                   f"board step: {detail}")
        finally:
            board.stop()
