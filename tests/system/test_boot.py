"""The initramfs boots on QEMU's emulated boards and its /init reaches the network.

Real QEMU (qemu-system-arm 7.2), the real image from ``appliance image build``; the
console is read through :class:`image.qemu.QemuBoard`, which stops QEMU by PID whatever
happens.  The guest tells a TCP listener on the host's 127.0.0.1 it is up, through
QEMU's user network (10.0.2.2 is the host's loopback as seen from the guest).
"""

from __future__ import annotations

import re
import socket
import threading
from pathlib import Path

import pytest

from appliance import __version__
from image.qemu import MCIMX6UL_EVK, SABRELITE, Machine, QemuBoard

pytestmark = [pytest.mark.slow, pytest.mark.system]

BOOT_TIMEOUT = 240.0  # TCG on a loaded 2-core CI runner
STAMP = r"nbdroot-init: \[([\d.]+)\] "


class Listener:
    """A TCP listener on 127.0.0.1 that records what the first client sends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(BOOT_TIMEOUT)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.peer = ""
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        try:
            conn, addr = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(30)
            self.peer = addr[0]
            while len(self.received) < 4096 and (chunk := conn.recv(4096)):
                self.received += chunk

    def close(self) -> None:
        self.sock.close()
        self._thread.join(5)


def boot_and_check(machine: Machine, image_dir: Path, log: Path) -> dict[str, float]:
    """Boot, assert the smoke /init's milestones, return the guest-clock timeline."""
    listener = Listener()
    append = f"appliance.init=smoke appliance.probe=10.0.2.2:{listener.port}"
    timeline: dict[str, float] = {}
    try:
        with QemuBoard.for_image(image_dir, log, machine=machine, append=append) as board:
            m = board.expect(rb"\[\s*([\d.]+)\] Run /init as init process", BOOT_TIMEOUT)
            timeline["kernel -> /init"] = float(m.group(1))
            m = board.expect(STAMP + r"modules loaded", BOOT_TIMEOUT)
            timeline["modules loaded"] = float(m.group(1))
            m = board.expect(STAMP + r"(eth0 \S+|DHCP on eth0 failed)", BOOT_TIMEOUT)
            timeline["eth0 configured"] = float(m.group(1))
            assert m.group(2) == b"eth0 10.0.2.15/24"
            board.expect(STAMP + r"nbd: /dev/nbd0 present", BOOT_TIMEOUT)
            m = board.expect(STAMP + r"python: (.*?)\r?\n", BOOT_TIMEOUT)
            timeline["python ran the agent"] = float(m.group(1))
            assert m.group(2).decode() == f"appliance {__version__}"
            m = board.expect(STAMP + r"probe (\S+): (\w+)", BOOT_TIMEOUT)
            assert m.group(3) == b"sent", board.tail()
            board.expect(STAMP + r"ready", BOOT_TIMEOUT)
    finally:
        listener.close()
    assert listener.received == b"nbdroot-probe from nbdroot\n"
    assert listener.peer == "127.0.0.1"
    return timeline


def test_sabrelite_initramfs_runs_agent_and_reaches_host(image_dir: Path,
                                                         tmp_path: Path) -> None:
    timeline = boot_and_check(SABRELITE, image_dir, tmp_path / "console.log")
    print("sabrelite guest timeline (s):",
          ", ".join(f"{k} {v:.1f}" for k, v in timeline.items()))
    assert timeline["kernel -> /init"] < timeline["python ran the agent"]


def test_mcimx6ul_evk_initramfs_boots(image_dir: Path, tmp_path: Path) -> None:
    timeline = boot_and_check(MCIMX6UL_EVK, image_dir, tmp_path / "console.log")
    print("mcimx6ul-evk guest timeline (s):",
          ", ".join(f"{k} {v:.1f}" for k, v in timeline.items()))


def test_qemu_is_stopped_by_pid_even_when_the_guest_hangs(image_dir: Path,
                                                           tmp_path: Path) -> None:
    board = QemuBoard.for_image(image_dir, tmp_path / "console.log",
                                append="appliance.init=shell")
    with board:
        pid = board.pid
        assert pid is not None
        board.expect(STAMP + r"shell", BOOT_TIMEOUT)
    with pytest.raises(ProcessLookupError):
        import os
        os.kill(pid, 0)
    assert re.search(r"Run /init", (tmp_path / "console.log").read_text(errors="replace"))
