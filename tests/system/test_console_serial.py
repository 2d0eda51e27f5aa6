"""The serial-console dialogue with the real sabrelite board under QEMU.

The board boots with a stored configuration that cannot boot (no ``nbd.uri``), so its
setup prompt opens at once on the console UART, which QEMU serves as a TCP socket on
127.0.0.1.  The host tool runs as a user runs it, ``appliance console
socket://127.0.0.1:PORT ...``: a bad value gives the board's one-line error and a
non-zero exit; the real settings with ``--psk-file``, ``--save`` and ``--boot`` make
the board boot its root from the real qemu-nbd (TLS-PSK) through the relay.  One boot
per test, with the system's QEMU (10: 7.2's i.MX UART drops input after about one
line).  QEMU and qemu-nbd are ended by PID whatever happens.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.console.expect import ConsoleTimeout
from appliance.host import demo
from appliance.host.console import Expect, SerialDriver
from appliance.host.servers import free_port
from image.qemu import QemuBoard
from tests.figures import figure
from tests.listening import wait_for_listen
from tests.system.agent_boot import BOOT_TIMEOUT, served_root, tcp_console_argv

pytestmark = [pytest.mark.slow, pytest.mark.system]

CANNOT_BOOT = re.compile(rb"nbdroot: cannot boot: [^\r\n]*nbd\.uri[^\r\n]*\r?\n")
CLI_TIMEOUT = 400.0  # the CLI's own --wait bounds the prompt; this bounds the process


def console(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``appliance console socket://127.0.0.1:port ARGS`` as a subprocess."""
    return subprocess.run([sys.executable, "-m", "appliance", "console",
                           f"socket://127.0.0.1:{port}", "--wait", "60", *args],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT)


def read_until(port: int, patterns: list[re.Pattern[bytes]], timeout: float) -> bytes:
    """What the console says (whole lines, typing nothing) up to one of ``patterns``."""
    driver = SerialDriver(f"socket://127.0.0.1:{port}")
    io = Expect(driver)
    try:
        io.expect(b"|".join(p.pattern for p in patterns), timeout)
    except ConsoleTimeout:
        pass  # the caller's assertion shows what was seen
    finally:
        driver.close()
    return io.output


@contextlib.contextmanager
def board_at_prompt(image_dir: Path, work: Path) -> Iterator[tuple[QemuBoard, int, Path]]:
    """A sabrelite board whose stored config cannot boot, waiting at its setup prompt.

    Yields (board, console port, UART log).  Nothing is typed before the prompt is up
    (the one run that typed during the kernel's boot stalled the console at once).
    """
    initrd = demo.board_initrd(image_dir, work, {"console.countdown": "1"})
    port = free_port()
    uart_log = work / "uart.log"
    argv = tcp_console_argv(demo.boot_argv(image_dir, initrd), port, uart_log)
    board = QemuBoard(argv, work / "qemu.log")
    board.start()
    try:
        wait_for_listen(port)
        early = read_until(port, [CANNOT_BOOT, demo.BOOT_FAILED], BOOT_TIMEOUT)
        assert CANNOT_BOOT.search(early), early[-3000:].decode(errors="replace")
        yield board, port, uart_log
    finally:
        board.stop()


def uart_tail(uart_log: Path) -> str:
    return uart_log.read_bytes()[-3000:].decode(errors="replace")


def test_console_bad_value_is_the_boards_one_line_error(image_dir: Path,
                                                        tmp_path: Path) -> None:
    with board_at_prompt(image_dir, tmp_path) as (_, port, uart_log):
        bad = console(port, "--set", "board.phy=40")
        assert bad.returncode != 0, (bad, uart_tail(uart_log))
        assert "Traceback" not in bad.stderr
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1, bad.stderr
        assert lines[0].startswith("appliance: error: the board refused "
                                   "'set board.phy 40': board.phy: "), bad.stderr
        assert "error: board.phy: " in uart_tail(uart_log)


def test_console_configures_saves_and_boots_the_board(image_dir: Path,
                                                      tmp_path: Path) -> None:
    with (served_root(image_dir, tmp_path / "server") as root,
          board_at_prompt(image_dir, tmp_path) as (board, port, uart_log)):
        good = console(port, "--set", f"nbd.uri={root.guest_uri}",
                       "--psk-file", str(root.psk_file), "--save", "--boot")
        assert good.returncode == 0, (good, uart_tail(uart_log))
        booting = time.monotonic()
        seen = read_until(port, [demo.ROOT_OK, demo.BOOT_FAILED], BOOT_TIMEOUT)
        took = time.monotonic() - board.started
        ok = demo.ROOT_OK.search(seen)
        assert ok is not None, uart_tail(uart_log)
        assert ok.group(1) == b"/dev/nbd0"
        figure(f"console boot (sabrelite, QEMU start -> root on NBD, incl. the console "
               f"dialogue): {took:.1f} s; 'boot' typed -> root: "
               f"{time.monotonic() - booting:.1f} s")
