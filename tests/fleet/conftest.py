"""A fleet with a golden image and ``appliance serve`` running as a real process.

``serving`` starts ``python -m appliance serve`` on a free port range of 127.0.0.1 and
waits for its "serving N board(s)" line (whole lines from its stderr, bounded); it is
ended by PID when the test ends, pass or fail, and any qemu-nbd it reported is checked
gone.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.config.psk import read_psk_file
from appliance.host.demo import board_initrd, boot_argv
from appliance.host.fleet.boards import QEMU_GUEST_HOST
from appliance.host.fleet.storm import free_ports
from image.qemu import QemuBoard

MiB = 1 << 20
GOLDEN_DATA = b"golden image, version 1\n" * 1000


def appliance(*args: str, fleet: Path) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "appliance", *args, "--fleet", str(fleet)],
                          capture_output=True, text=True, timeout=120, check=False)


@dataclass
class Serve:
    """A running ``appliance serve`` and the lines it printed."""

    proc: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def reader(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()

    def wait_line(self, pred: Callable[[str], bool], timeout: float = 20.0) -> str:
        """The first whole line matching ``pred`` (bounded)."""
        return self.wait_lines(pred, 1, timeout)[0]

    def wait_lines(self, pred: Callable[[str], bool], count: int,
                   timeout: float = 20.0) -> list[str]:
        """The first ``count`` whole lines matching ``pred`` (bounded)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [line for line in self.lines if pred(line)]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such line from serve: {self.lines}")
                self.cond.wait(min(left, 0.5))

    def server_pids(self) -> list[int]:
        return [int(line.split(" pid ")[1].split()[0]) for line in self.lines
                if "qemu-nbd pid" in line]

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
        try:
            return self.proc.wait(20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """A fleet with golden version 1 (8 MiB raw, data at 0) and no boards."""
    image = tmp_path / "golden.raw"
    with image.open("wb") as f:
        f.truncate(8 * MiB)
        f.write(GOLDEN_DATA)
    root = tmp_path / "fleet"
    r = appliance("golden", "import", str(image), fleet=root)
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture
def serving(fleet: Path) -> Iterator[Callable[[], Serve]]:
    started: list[Serve] = []

    def start() -> Serve:
        port = free_ports(16)
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "serve", "--fleet",
                                 str(fleet), "--listen", f"127.0.0.1:{port}"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        s = Serve(proc, port)
        threading.Thread(target=s.reader, daemon=True).start()
        started.append(s)
        s.wait_line(lambda line: "board(s) from" in line)
        return s

    yield start
    for s in started:
        s.stop()
        for pid in s.server_pids():
            assert not pid_alive(pid), f"qemu-nbd {pid} outlived appliance serve"


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def start_board(out: Path, fleet: Path, serve: Serve, slot: int, name: str, work: Path,
                **extra: str) -> QemuBoard:
    """Boot QEMU as fleet board ``name`` (slot ``slot``), configured as ``fleet add`` made
    it, through the boot's config archive (QEMU 7.2's UART drops console input)."""
    identity, key = read_psk_file(fleet / "boards" / name / "tls" / "keys.psk")
    settings = {"nbd.uri": f"nbds://{name}@{QEMU_GUEST_HOST}:{serve.port + slot}/{name}",
                "psk.identity": identity, "psk.key": key.hex(), "console.countdown": "1",
                **extra}
    work.mkdir(mode=0o700)
    board = QemuBoard(boot_argv(out, board_initrd(out, work, settings)), work / "console.log")
    board.start()
    return board
