"""The board's line editor and countdown on a real pty (the test types on the master side)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from appliance.console.prompt import redact, secret_typed
from appliance.console.terminal import Terminal


@pytest.fixture
def tty() -> Iterator[tuple[int, Terminal]]:
    master, slave = os.openpty()
    term = Terminal(slave, slave)
    try:
        with term.raw():
            yield master, term
    finally:
        os.close(master)
        os.close(slave)


def screen(master: int) -> bytes:
    out = b""
    while True:
        import select
        ready, _, _ = select.select([master], [], [], 0.1)
        if not ready:
            return out
        out += os.read(master, 4096)


@pytest.mark.parametrize(("typed", "line"), [
    (b"show\r", "show"),
    (b"shox\x7fw\r", "show"),
    (b"shox\x08w\n", "show"),
    (b"garbage\x15help\r\n", "help"),
    (b"se\x1b[Dt board.phy 3\r", "set board.phy 3"),
    (b"a\x00b\xffc\r", "abc"),
    (b"oops\x03", ""),
])
def test_line_editing(tty: tuple[int, Terminal], typed: bytes, line: str) -> None:
    master, term = tty
    os.write(master, typed)
    assert term.read_line("nbdroot> ", 2.0) == line


def test_crlf_is_one_line_and_echo_is_plain(tty: tuple[int, Terminal]) -> None:
    master, term = tty
    os.write(master, b"show\r\nhelp\r\n")
    assert term.read_line("p> ", 2.0) == "show"
    assert term.read_line("p> ", 2.0) == "help"
    assert screen(master) == b"p> show\r\np> help\r\n"


def test_secret_values_echo_as_stars(tty: tuple[int, Terminal]) -> None:
    master, term = tty
    os.write(master, b"set psk.key 00ff\x7f\r")
    assert term.read_line("> ", 2.0, secret_typed) == "set psk.key 00f"
    assert screen(master) == b"> set psk.key ****\x08 \x08\r\n"
    assert redact("set  psk.key 00ff") == "set  psk.key ***"
    assert redact("set board.phy 3") == "set board.phy 3"


def test_idle_timeout_and_countdown(tty: tuple[int, Terminal]) -> None:
    master, term = tty
    start = time.monotonic()
    assert term.read_line("> ", 0.3) is None
    assert not term.wait_for_key(1, "press a key")
    assert 1.0 <= time.monotonic() - start < 3.0
    assert screen(master).endswith(b"press a key within 1 s: 1 booting\r\n")
    os.write(master, b"xyz")
    assert term.wait_for_key(3, "press a key")
    os.write(master, b"help\r")
    assert term.read_line("> ", 1.0) == "help"  # only the interrupting keys were dropped


def test_hangup_is_end_of_input() -> None:
    master, slave = os.openpty()
    term = Terminal(slave, slave)
    os.close(master)
    try:
        assert term.read_line("> ", 1.0) is None
        assert term.eof
    finally:
        os.close(slave)


def test_pipes_work_without_termios() -> None:
    r, w = os.pipe()
    term = Terminal(r, w)
    try:
        with term.raw():
            os.write(w, b"show\r\n")
            assert term.read_line("", 1.0) == "show"
    finally:
        os.close(r)
        os.close(w)
