"""The host's side of the serial console: a thin pyserial driver, an expect layer, a script.

Layers, as in labgrid: :class:`SerialDriver` only reads (with a timeout) and writes
bytes over ``serial.serial_for_url`` (a device like /dev/ttyUSB0, a pty path, or
``socket://127.0.0.1:PORT`` for QEMU's ``-serial tcp:...``); :class:`Expect` is the
project's one expect layer (:mod:`appliance.console.expect`, whole lines) over that driver;
:class:`BoardDialogue` knows the board's prompt protocol (``nbdroot> ``, an answer
ending in ``ok`` or ``error: ...``) and raises :class:`BoardRefused`, carrying the
board's words, when a command fails.  :func:`passthrough` is the interactive
terminal (Ctrl-] quits).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import select
import sys
import termios
import threading
import tty
from typing import Any

from appliance.console import expect
from appliance.console.prompt import ERROR_PREFIX, OK, PROMPT, redact
from appliance.console.timeout import Timeout
from appliance.errors import ConsoleError

log = logging.getLogger(__name__)

DEFAULT_BAUD = 115200
QUIT_BYTE = 0x1D  # Ctrl-]
_TAIL = 200  # characters of the board's output quoted in errors
_STATUS = re.compile(
    rb"(?P<body>.*?)\r?\n(?P<status>" + re.escape(OK.encode()) + rb"|"
    + re.escape(ERROR_PREFIX.encode()) + rb"[^\r\n]*)\r?\n", re.S)


class BoardRefused(ConsoleError):
    """The board answered a command with ``error: ...``."""

    def __init__(self, command: str, reply: str, output: list[str]) -> None:
        super().__init__(f"the board refused '{command}': {reply}")
        self.command = command
        self.reply = reply
        self.output = output


class SerialDriver:
    """Bytes in and out of a serial port (any pyserial URL); nothing else."""

    def __init__(self, port: str, baudrate: int = DEFAULT_BAUD) -> None:
        import serial

        self.port = port
        self._serial_error: type[Exception] = serial.SerialException
        try:
            self._serial: Any = serial.serial_for_url(port, baudrate=baudrate, timeout=0)
        except (serial.SerialException, ValueError, OSError) as exc:
            raise ConsoleError(f"cannot open {port}: {exc}") from None

    def _read(self, size: int, timeout: float) -> bytes:
        """Up to *size* bytes; waits at most *timeout* seconds for the first."""
        try:
            self._serial.timeout = max(timeout, 0.0)
            first: bytes = self._serial.read(1)
            if not first:
                return b""
            self._serial.timeout = 0
            rest: bytes = self._serial.read(size - 1) if size > 1 else b""
            return first + rest
        except (self._serial_error, OSError) as exc:
            raise ConsoleError(f"reading {self.port} failed: {exc}") from None

    def _write(self, data: bytes) -> None:
        """Send all of *data*."""
        try:
            self._serial.write(data)
            self._serial.flush()
        except (self._serial_error, OSError) as exc:
            raise ConsoleError(f"writing {self.port} failed: {exc}") from None

    def close(self) -> None:
        """Release the port."""
        with contextlib.suppress(Exception):
            self._serial.close()


class Expect(expect.Expect):
    """The project's expect layer (whole lines; prompts at the end) over a serial port."""

    def __init__(self, driver: SerialDriver) -> None:
        super().__init__(lambda timeout: driver._read(4096, timeout), driver.port)
        self.driver = driver

    def send(self, data: bytes) -> None:
        """Send raw bytes."""
        self.driver._write(data)

    def tail(self, size: int = _TAIL) -> str:
        """The last characters received, for error messages."""
        return super().tail(size)


class BoardDialogue:
    """Drive the board's ``nbdroot>`` prompt: interrupt the boot, run commands."""

    def __init__(self, expect: Expect, timeout: float = 30.0) -> None:
        self.io = expect
        self.timeout = timeout
        self._prompt = re.compile(re.escape(PROMPT.encode()))

    def interrupt(self, timeout: float = 60.0) -> None:
        """Press a key (Enter, once a second) until the prompt shows, then let it settle."""
        deadline = Timeout(timeout)
        while True:
            self.io.send(b"\r")
            try:
                self.io.expect_prompt(self._prompt, min(1.0, deadline.remaining or 0.0))
                break
            except ConsoleError:
                if deadline.expired:
                    raise ConsoleError(
                        f"no '{PROMPT.strip()}' prompt on {self.io.driver.port} within "
                        f"{timeout:g} s (is the board booting? it last said: "
                        f"{self.io.tail()!r})") from None
        self.io.settle(quiet=0.3, timeout=5.0)

    def command(self, line: str, *, expect_prompt: bool = True) -> list[str]:
        """Run one command; its output lines, or BoardRefused with the board's message."""
        self.io.log.info("> %s", redact(line))
        self.io.clear()
        self.io.send(line.encode("ascii") + b"\r")
        m = self.io.expect(_STATUS, self.timeout, f"answer to '{redact(line)}'")
        lines = m.group("body").decode("ascii", "replace").splitlines()[1:]  # [0] = echo
        lines = [x.rstrip("\r") for x in lines]
        status = m.group("status").decode("ascii", "replace")
        if status != OK:
            self.io.expect_prompt(self._prompt, self.timeout)
            raise BoardRefused(redact(line), status[len(ERROR_PREFIX):], lines)
        if expect_prompt:
            self.io.expect_prompt(self._prompt, self.timeout)
        return lines


def run_script(port: str, commands: list[str], *, baudrate: int = DEFAULT_BAUD,
               timeout: float = 30.0, boot_timeout: float = 60.0) -> list[tuple[str, list[str]]]:
    """Interrupt the board's boot, run *commands* in order; each command with its output.

    Stops at the first refused command (BoardRefused).  A final ``boot`` command is
    not followed by a prompt.
    """
    driver = SerialDriver(port, baudrate)
    try:
        dialogue = BoardDialogue(Expect(driver), timeout)
        dialogue.interrupt(boot_timeout)
        results = []
        for cmd in commands:
            is_boot = cmd.strip() == "boot"
            results.append((redact(cmd), dialogue.command(cmd, expect_prompt=not is_boot)))
        return results
    finally:
        driver.close()


def passthrough(port: str, baudrate: int = DEFAULT_BAUD, fd_in: int = 0,
                fd_out: int = 1) -> None:
    """An interactive terminal on *port* until Ctrl-] (or end of input)."""
    driver = SerialDriver(port, baudrate)
    stop = threading.Event()

    def pump() -> None:
        while not stop.is_set():
            try:
                data = driver._read(4096, 0.1)
            except ConsoleError as exc:
                os.write(fd_out, f"\r\n[{exc}]\r\n".encode())
                stop.set()
                return
            if data:
                os.write(fd_out, data)

    reader = threading.Thread(target=pump, name="console-reader", daemon=True)
    sys.stderr.write(f"--- {port} at {baudrate} baud; Ctrl-] quits ---\r\n")
    with _raw_input(fd_in):
        reader.start()
        try:
            _forward_keys(driver, stop, fd_in)
        finally:
            stop.set()
            reader.join(timeout=2.0)
            driver.close()
    sys.stderr.write("\r\n--- closed ---\n")


def _forward_keys(driver: SerialDriver, stop: threading.Event, fd_in: int) -> None:
    while not stop.is_set():
        ready, _, _ = select.select([fd_in], [], [], 0.2)
        if not ready:
            continue
        data = os.read(fd_in, 1024)
        if not data:
            return
        quit_at = data.find(bytes([QUIT_BYTE]))
        if quit_at >= 0:
            if quit_at:
                driver._write(data[:quit_at])
            return
        driver._write(data)


@contextlib.contextmanager
def _raw_input(fd: int) -> Any:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
