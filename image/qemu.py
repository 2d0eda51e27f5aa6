"""Booting the image under ``qemu-system-arm`` and talking to its serial console.

:class:`Machine` describes a board QEMU emulates (console UART, NICs); :class:`QemuBoard`
starts QEMU with the kernel, DTB and initramfs, reads the console through a pipe into a
log file and the project's one expect layer (:mod:`appliance.console.expect`: whole lines
only), and offers :meth:`QemuBoard.expect`, :meth:`QemuBoard.sendline` and
:meth:`QemuBoard.run` with deadlines.  QEMU 7.2 keeps running after the guest
powers off, so :meth:`QemuBoard.stop` always ends QEMU itself, by its PID.  Used by the
system tests and by ``appliance demo``.
"""

from __future__ import annotations

import logging
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from appliance.console.expect import ConsoleClosed, ConsoleTimeout, Expect, FdReader
from appliance.errors import ImageError
from appliance.host import children
from image.run import clean_env, which

__all__ = ["MACHINES", "MCIMX6UL_EVK", "SABRELITE", "ConsoleTimeout", "Machine", "QemuBoard",
           "qemu_argv"]

log = logging.getLogger(__name__)

STOP_GRACE = 5.0
TYPE_CHUNK = 1
TYPE_PAUSE = 0.02
PROMPT = r"[#$] $"  # the shell's prompt, at the end of what the console has shown


@dataclass(frozen=True)
class Machine:
    """One QEMU machine: its -M name, DTB file, console device and serial/NIC layout."""

    name: str
    dtb: str
    console: str
    serial_index: int  # which -serial is the console (earlier ones get "null")
    nics: int


SABRELITE = Machine("sabrelite", "imx6q-sabrelite.dtb", "ttymxc1", 1, 1)
MCIMX6UL_EVK = Machine("mcimx6ul-evk", "imx6ul-14x14-evk.dtb", "ttymxc0", 0, 2)
MACHINES = {m.name: m for m in (SABRELITE, MCIMX6UL_EVK)}


NIC = "user,model=imx.enet"  # the FEC, on QEMU's user networking (the host is 10.0.2.2)


def board_argv(machine: Machine, memory: str = "1G") -> list[str]:
    """qemu-system-arm's machine, memory, console UART and NICs, without a boot source."""
    serials: list[str] = []
    for i in range(machine.serial_index + 1):
        serials += ["-serial", "stdio" if i == machine.serial_index else "null"]
    nics: list[str] = []
    for _ in range(machine.nics):
        nics += ["-nic", NIC]
    return ["qemu-system-arm", "-M", machine.name, "-m", memory, "-no-reboot",
            "-display", "none", "-monitor", "none", *serials, *nics]


def qemu_argv(machine: Machine, artefacts: Path, *, append: str = "", memory: str = "1G",
              kernel: str = "vmlinuz", initrd: str = "initramfs.cpio.gz",
              extra: tuple[str, ...] = ()) -> list[str]:
    """The qemu-system-arm command line booting ``artefacts`` (an ``image build`` DIR)."""
    cmdline = f"console={machine.console},115200 rdinit=/init {append}".strip()
    return [*board_argv(machine, memory),
            "-kernel", str(artefacts / kernel), "-dtb", str(artefacts / machine.dtb),
            "-initrd", str(artefacts / initrd), "-append", cmdline, *extra]


class QemuBoard:
    """A running emulated board with an expect-style console (use as a context manager)."""

    def __init__(self, argv: list[str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._reader: FdReader | None = None
        self._log: IO[bytes] | None = None
        self.console = Expect(self._receive, "console")
        self.started = 0.0
        self._tags = 0
        self.prompt = PROMPT

    @classmethod
    def for_image(cls, artefacts: Path, log_path: Path, machine: Machine = SABRELITE,
                  append: str = "", extra: tuple[str, ...] = ()) -> QemuBoard:
        """A board booting the artefacts of ``appliance image build --out artefacts``."""
        for name in ("vmlinuz", machine.dtb, "initramfs.cpio.gz"):
            if not (artefacts / name).exists():
                raise ImageError(f"{artefacts / name} is missing: run `appliance image build "
                                 f"--out {artefacts}` first")
        return cls(qemu_argv(machine, artefacts, append=append, extra=extra), log_path)

    @property
    def pid(self) -> int | None:
        """QEMU's process id while it runs."""
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Start QEMU; the console is read in the background from now on."""
        argv = [which(self.argv[0]), *self.argv[1:]]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        log.info("starting %s", " ".join(argv))
        self._proc = children.popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=self._log, env=clean_env())
        self.started = time.monotonic()
        assert self._proc.stdout is not None
        self._reader = FdReader(self._proc.stdout.fileno(), "qemu-console", self._log)
        self._reader.start()

    def _receive(self, timeout: float) -> bytes:
        if self._reader is None:
            raise ConsoleClosed("QEMU is not running")
        return self._reader.receive(timeout)

    def expect(self, pattern: str | bytes, timeout: float) -> re.Match[bytes]:
        """Wait until whole console lines after the last match show ``pattern`` (a regex)."""
        return self.console.expect(pattern, timeout)

    def tail(self, size: int = 1500) -> str:
        """The last ``size`` bytes of console output, as text."""
        return self.console.tail(size)

    @property
    def output(self) -> str:
        """Everything the console has shown so far."""
        return self.console.output.decode(errors="replace")

    def sendline(self, line: str) -> None:
        """Type ``line`` and Enter on the console."""
        if self._proc is None or self._proc.stdin is None:
            raise ImageError("QEMU is not running")
        data = line.encode() + b"\n"
        for i in range(0, len(data), TYPE_CHUNK):  # a slow UART: type, don't paste
            self._proc.stdin.write(data[i:i + TYPE_CHUNK])
            self._proc.stdin.flush()
            time.sleep(TYPE_PAUSE)

    def run(self, command: str, timeout: float = 60.0, *,
            after_prompt: bool = True) -> tuple[int, str]:
        """Run a shell command on the console's shell; return (exit status, output).

        Waits for the shell's prompt first (``after_prompt=False``: the caller knows the
        shell is waiting, though other output may have followed its prompt).  The markers
        are typed with quotes inside
        them ('_'), so the shell's echo of the typed line never matches what ``echo``
        prints.  Needs a QEMU whose i.MX UART takes input (10; 7.2 drops it after about
        one line).
        """
        if after_prompt:  # ash flushes input typed before its prompt
            self.console.expect_prompt(self.prompt, timeout)
        self._tags += 1
        tag = f"CMD{self._tags}x{time.monotonic_ns() % 10**6}"
        self.sendline(f"echo {tag}'_'BEGIN; {command}; echo {tag}'_'END=$?")
        begin = self.expect(re.escape(f"{tag}_BEGIN") + r"\r?\n", timeout)
        end = self.expect(re.escape(f"{tag}_END=") + r"(\d+)", timeout)
        text = self.console.output[begin.end():end.start()].decode(errors="replace")
        return int(end.group(1)), text.replace("\r", "")

    def stop(self) -> int | None:
        """End QEMU (terminate, then kill) by PID; return its exit status."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        log.info("stopping QEMU pid %d", proc.pid)
        children.end(proc, STOP_GRACE)
        if self._reader:
            self._reader.join(STOP_GRACE)  # QEMU is gone: its console pipe is at EOF
        for stream in (proc.stdin, proc.stdout):
            if stream:
                stream.close()
        if self._log:
            self._log.close()
        return proc.returncode

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
