"""A null-modem cable for console tests, and the board's prompt running on one end.

``serial_link`` starts ``socat`` joining two real ptys: the board's end behaves like
the board's serial tty (canonical mode and echo until the prompt changes them), the
host's end is opened with pyserial.  ``board`` runs :func:`configure_at_boot` in a
thread on the board's end, with a real config store in a temporary directory.
socat is stopped by PID when the test ends, which hangs up the board's end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from appliance.config import BootConfig, Config, ConfigStore, DirectoryMedium
from appliance.console.prompt import Tester, configure_at_boot
from tests.listening import wait_for_listen

KEY = "5eed" * 16
BOOTABLE = (Config().set("nbd.uri", "nbds://board7@10.0.2.2:10809/root")
            .set("psk.identity", "board7").set("psk.key", KEY))


@dataclass
class Link:
    board: Path  # the board's tty (a pty slave)
    host: str  # what the host tool opens: a pty path or socket://127.0.0.1:PORT


def _start_socat(args: list[str], wait_for: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["socat", *args], stdin=subprocess.DEVNULL)
    for _ in range(100):
        if wait_for.exists():
            return proc
        time.sleep(0.05)
    proc.kill()
    proc.wait(5)
    raise RuntimeError("socat did not create its pty")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture(params=["pty", "socket"])
def serial_link(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Link]:
    board = tmp_path / "board-tty"
    if request.param == "pty":
        host = tmp_path / "host-tty"
        proc = _start_socat([f"pty,link={board}", f"pty,raw,echo=0,link={host}"], board)
        for _ in range(100):
            if host.exists():
                break
            time.sleep(0.05)
        link = Link(board, str(host))
    else:  # like QEMU's -serial tcp:127.0.0.1:PORT,server
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = _start_socat([f"pty,link={board}",
                             f"tcp-listen:{port},bind=127.0.0.1,reuseaddr"], board)
        try:  # socat opens the pty first, then listens
            wait_for_listen(port, 10, "socat")
        except TimeoutError:
            _stop(proc)
            raise
        link = Link(board, f"socket://127.0.0.1:{port}")
    try:
        yield link
    finally:
        _stop(proc)


@dataclass
class Board:
    """configure_at_boot running in a thread on the board's end of the link."""

    tty: Path
    store: ConfigStore
    tested: list[BootConfig] = field(default_factory=list)
    result: BootConfig | None = None
    error: BaseException | None = None
    thread: threading.Thread | None = None

    def start(self, countdown: int = 5, idle_timeout: float = 20.0,
              tester: Tester | None = None, **hooks: Any) -> None:
        fd = os.open(self.tty, os.O_RDWR | os.O_NOCTTY)

        def run() -> None:
            try:
                self.result = configure_at_boot(self.store, fd, fd, tester=tester,
                                                countdown=countdown, idle_timeout=idle_timeout,
                                                **hooks)
            except BaseException as exc:
                self.error = exc
            finally:
                os.close(fd)

        self.thread = threading.Thread(target=run, name="board", daemon=True)
        self.thread.start()

    def wait(self, timeout: float = 15.0) -> BootConfig:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the board did not leave the prompt"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@pytest.fixture
def board(serial_link: Link, tmp_path: Path) -> Iterator[Callable[..., Board]]:
    boards: list[Board] = []

    def make(config: Config | None = None, **start: object) -> Board:
        directory = tmp_path / "boot"
        directory.mkdir(exist_ok=True)
        store = ConfigStore(DirectoryMedium(directory))
        if config is not None:
            store.save(config)
        b = Board(serial_link.board, store)
        b.start(**start)  # type: ignore[arg-type]
        boards.append(b)
        return b

    yield make
