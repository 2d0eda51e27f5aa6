"""``appliance demo`` run the way a person runs it: in a terminal (a real pty).

:class:`DemoTerminal` starts the demo as the session leader of a new pty (``pty.fork``),
so the pty is its controlling terminal: closing the terminal sends it SIGHUP as a
closed terminal window or ssh session does.  What the demo and the board print is read
through the project's one expect layer (whole lines); :meth:`DemoTerminal.type` types
at a person's speed.  The demo's children (qemu-nbd, QEMU) are found through /proc, and
:meth:`DemoTerminal.close` ends everything this test started, by PID, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import signal
import sys
import time
from pathlib import Path

from appliance.console.expect import Expect, FdReader
from appliance.deadline import Deadline

KEY_PAUSE = 0.08  # seconds between keys: about 12 characters a second, a fast typist
SERVING = re.compile(rb"demo: qemu-nbd \(pid (\d+)\) serves")
BOOTING = re.compile(rb"demo: booting -M (\S+) ")


class DemoTerminal:
    """``python -m appliance demo ARGS`` on a fresh pty, with an expect layer on it."""

    def __init__(self, args: list[str], log_path: Path, cwd: Path | None = None) -> None:
        argv = [sys.executable, "-m", "appliance", "demo", *args]
        self._log_path = log_path
        self._log = log_path.open("wb")
        pid, fd = pty.fork()
        if pid == 0:  # the child: exec at once (the parent has threads)
            try:
                # As a shell starts a foreground job: SIGINT and SIGQUIT at their defaults
                # (a CI runner that started us in the background has them ignored).
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGQUIT, signal.SIG_DFL)
                if cwd is not None:
                    os.chdir(cwd)
                os.execv(argv[0], argv)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self._reader = FdReader(fd, "demo-terminal", self._log)
        self._reader.start()
        self.io = Expect(self._reader.receive, "demo terminal")
        self.status: int | None = None

    def type(self, text: str) -> None:
        """Type ``text`` key by key, as a person does."""
        for char in text:
            os.write(self.fd, char.encode())
            time.sleep(KEY_PAUSE)

    def children(self) -> list[int]:
        """PIDs of the demo's direct children (qemu-nbd, QEMU) right now."""
        found: list[int] = []
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{self.pid}/task"):
                with open(f"/proc/{self.pid}/task/{task}/children", encoding="ascii") as f:
                    found += [int(p) for p in f.read().split()]
        return found

    def wait(self, timeout: float) -> int:
        """The demo's exit status (a signal as -N); waits at most ``timeout`` seconds."""
        deadline = Deadline(timeout)
        while self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
            elif deadline.expired:
                raise TimeoutError(f"the demo (pid {self.pid}) still runs after {timeout:g} s; "
                                   f"{self.where()}")
            else:
                time.sleep(0.1)
        return self.status

    def where(self) -> str:
        """What the demo is doing: its Python stacks (SIGUSR1, faulthandler) and its
        terminal's last output, for a failure message."""
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGUSR1)
            time.sleep(1.0)  # let it write the stacks; this is a failure path only
        children = ", ".join(f"{p} {_comm(p)}" for p in self.children()) or "none"
        tail = self._log_path.read_bytes()[-3000:].decode(errors="replace")
        return f"children: {children}; terminal's last output:\n{tail}"

    def hang_up(self) -> None:
        """Close the terminal, as closing its window does (the kernel sends SIGHUP)."""
        with contextlib.suppress(OSError):
            os.close(self.fd)

    def close(self, extra_pids: list[int] | None = None) -> None:
        """End the demo and anything it left (by PID), then the pty."""
        pids = [self.pid, *(extra_pids or []), *self.children()]
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError, ChildProcessError):
            self.wait(10)
        self.hang_up()
        self._reader.join(5)
        self._log.close()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "?"


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Those of ``pids`` still alive after up to ``timeout`` seconds."""
    deadline = Deadline(timeout)
    while (left := [p for p in pids if alive(p)]) and not deadline.expired:
        time.sleep(0.1)
    return left
