"""The serial-console dialogue with the real sabrelite board under QEMU.

The board boots with a stored configuration that cannot boot (no ``nbd.uri``), so its
setup prompt opens at once on the console UART, which QEMU serves as a TCP socket on
127.0.0.1.  The host tool runs as a user runs it, ``appliance console
socket://127.0.0.1:PORT ...``: first a bad value (the board's one-line error, a
non-zero exit), then the real settings with ``--psk-file``, ``--save`` and ``--boot``;
the board must then boot its root from the real qemu-nbd (TLS-PSK) through the relay.
QEMU and qemu-nbd are ended by PID whatever happens.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from appliance import demo
from image.qemu import QemuBoard
from tests.figures import figure
from tests.system.agent_boot import (
    BOOT_TIMEOUT,
    free_port,
    served_root,
    tcp_console_argv,
    wait_for_listen,
)

pytestmark = [pytest.mark.slow, pytest.mark.system]

CANNOT_BOOT = re.compile(rb"nbdroot: cannot boot: [^\r\n]*nbd\.uri[^\r\n]*\r?\n")
CLI_TIMEOUT = 400.0  # the CLI's own --wait bounds the prompt; this bounds the process


def console(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``appliance console socket://127.0.0.1:port ARGS`` as a subprocess."""
    return subprocess.run([sys.executable, "-m", "appliance", "console",
                           f"socket://127.0.0.1:{port}", "--wait", str(BOOT_TIMEOUT), *args],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


def read_until(port: int, patterns: list[re.Pattern[bytes]], timeout: float) -> bytes:
    """What the console says (read with pyserial, typing nothing) up to one of ``patterns``."""
    seen = b""
    deadline = time.monotonic() + timeout
    link = serial.serial_for_url(f"socket://127.0.0.1:{port}", timeout=1.0)
    try:
        while time.monotonic() < deadline:
            chunk: bytes = link.read(4096)
            seen += chunk
            if any(p.search(seen) for p in patterns):
                return seen
    finally:
        link.close()
    return seen


def test_console_configures_saves_and_boots_the_board(image_dir: Path,
                                                      tmp_path: Path) -> None:
    with served_root(image_dir, tmp_path / "server") as root:
        initrd = demo.board_initrd(image_dir, tmp_path, {"console.countdown": "1"})
        port = free_port()
        uart_log = tmp_path / "uart.log"
        argv = tcp_console_argv(demo.boot_argv(image_dir, initrd), port, uart_log)
        board = QemuBoard(argv, tmp_path / "qemu.log")
        board.start()
        try:
            wait_for_listen(port)
            # Type nothing until the agent's prompt is up: QEMU 7.2's i.MX UART stalls
            # the guest's console when input arrives during early boot (measured).
            early = read_until(port, [CANNOT_BOOT, demo.BOOT_FAILED], BOOT_TIMEOUT)
            assert CANNOT_BOOT.search(early), early[-3000:].decode(errors="replace")
            bad = console(port, "--set", "board.phy=40")
            assert bad.returncode != 0, bad
            assert "Traceback" not in bad.stderr
            lines = bad.stderr.strip().splitlines()
            assert len(lines) == 1, bad.stderr
            assert lines[0].startswith("appliance: error: the board refused "
                                       "'set board.phy 40': "), bad.stderr

            good = console(port, "--set", f"nbd.uri={root.guest_uri}",
                           "--psk-file", str(root.psk_file), "--save", "--boot")
            assert good.returncode == 0, (good, uart_log.read_bytes()[-3000:])
            booting = time.monotonic()
            seen = read_until(port, [demo.ROOT_OK, demo.BOOT_FAILED], BOOT_TIMEOUT)
            took = time.monotonic() - board.started
            ok = demo.ROOT_OK.search(seen)
            assert ok is not None, seen[-3000:].decode(errors="replace")
            assert ok.group(1) == b"/dev/nbd0"
            figure(f"console boot (sabrelite, QEMU start -> root on NBD, incl. the console "
                   f"dialogue): {took:.1f} s; after 'boot': {time.monotonic() - booting:.1f} s")
        finally:
            board.stop()
