"""The one console expect layer: wait for what a serial console shows, whole lines only.

A console's bytes arrive in arbitrary pieces, so a pattern that ends in ``\\S+``, ``.*`` or
``[^\\r\\n]*`` can match half a line that is still arriving (``eth0 10.0.2.15/2`` of
``eth0 10.0.2.15/24``).  :class:`Expect` therefore searches only the text up to the last
line end it has received; a line is seen once its ``\\n`` has arrived.  A prompt is the one
thing a console shows without a line end: :meth:`Expect.expect_prompt` matches at the very
end of the output instead, and is for fixed text (``nbdroot> ``, ``# ``) only.

The layer only needs a ``receive(timeout) -> bytes`` function: ``b""`` when nothing came in
time, :class:`ConsoleClosed` when the console has gone.  The host's serial tool
(pyserial) supplies one; :class:`FdReader` makes one of a pipe or a pty (the QEMU
harness), reading it in a thread so that the writer never blocks on a full pipe.
Everything received is kept, so :attr:`Expect.output` is the whole transcript;
``expect`` consumes up to its match, so the next wait only sees what came after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import threading
from collections.abc import Callable
from typing import IO

from appliance.console.timeout import Timeout
from appliance.errors import ConsoleError

POLL = 0.2  # longest single wait inside expect(), so deadlines are kept
TAIL = 1500  # bytes of output quoted in a timeout's message

Pattern = str | bytes | re.Pattern[bytes]
Receive = Callable[[float], bytes]


class ConsoleTimeout(ConsoleError):
    """The console did not show what was expected in time."""


class ConsoleClosed(ConsoleTimeout):
    """The console's other end went away (QEMU exited, the port closed) before it did."""


def compile_pattern(pattern: Pattern) -> re.Pattern[bytes]:
    """``pattern`` as a compiled bytes regex."""
    if isinstance(pattern, re.Pattern):
        return pattern
    return re.compile(pattern.encode() if isinstance(pattern, str) else pattern)


class Expect:
    """What a console has shown, searched as it arrives (see the module docstring)."""

    def __init__(self, receive: Receive, name: str) -> None:
        self._receive = receive
        self.name = name
        self._buf = bytearray()
        self._pos = 0  # expect() has consumed up to here
        self._closed = False
        self.log = logging.getLogger(f"{__name__}.{name}")

    @property
    def output(self) -> bytes:
        """Everything the console has shown so far."""
        return bytes(self._buf)

    @property
    def pending(self) -> bytes:
        """What arrived after the last match."""
        return bytes(self._buf[self._pos:])

    def tail(self, size: int = TAIL) -> str:
        """The last ``size`` bytes shown, as text (for error messages)."""
        return bytes(self._buf[-size:]).decode(errors="replace")

    def expect(self, pattern: Pattern, timeout: float, what: str = "") -> re.Match[bytes]:
        """Wait until whole lines shown after the last match contain ``pattern``."""
        regex = compile_pattern(pattern)
        return self._wait(regex, timeout, what, self._line_end)

    def expect_prompt(self, pattern: Pattern, timeout: float,
                      what: str = "prompt") -> re.Match[bytes]:
        """Wait for ``pattern`` (fixed text) at the very end of what the console shows."""
        regex = compile_pattern(pattern)
        at_end = re.compile(b"(?:" + regex.pattern + rb")\Z", regex.flags)
        return self._wait(at_end, timeout, what, lambda: len(self._buf))

    def clear(self) -> None:
        """Forget what has arrived so far: later waits see only newer output."""
        self._pos = len(self._buf)

    def settle(self, quiet: float, timeout: float) -> None:
        """Read until nothing arrives for ``quiet`` seconds (or ``timeout``), then clear."""
        deadline = Timeout(timeout)
        while not deadline.expired and self._pull(min(quiet, deadline.remaining or 0.0)):
            pass
        self.clear()

    def _line_end(self) -> int:
        return self._buf.rfind(b"\n", self._pos) + 1 or self._pos

    def _wait(self, regex: re.Pattern[bytes], timeout: float, what: str,
              end: Callable[[], int]) -> re.Match[bytes]:
        deadline = Timeout(timeout)
        while True:
            match = regex.search(self._buf, self._pos, end())
            if match:
                self._pos = match.end()
                return match
            if self._closed or deadline.expired:
                why = "the console closed" if self._closed else f"not seen within {timeout:g} s"
                raise (ConsoleClosed if self._closed else ConsoleTimeout)(
                    f"{self.name}: {what or repr(regex.pattern)} {why}; "
                    f"last output:\n{self.tail()}")
            self._pull(min(deadline.remaining or 0.0, POLL))

    def _pull(self, timeout: float) -> bool:
        """Receive once (at most ``timeout`` s); False when nothing came."""
        if self._closed:
            return False
        try:
            data = self._receive(timeout)
        except ConsoleClosed:
            self._closed = True
            return False
        if data:
            self.log.debug("< %r", data)
            self._buf += data
        return bool(data)


class FdReader:
    """Drains a file descriptor in a background thread, optionally into a log file.

    Its :meth:`receive` is an :class:`Expect` source.  End of file, and EIO from a pty
    whose other side closed, end the stream (:class:`ConsoleClosed` once drained).
    """

    CHUNK = 4096

    def __init__(self, fd: int, name: str, log: IO[bytes] | None = None) -> None:
        self._fd = fd
        self._log = log
        self._chunks: queue.Queue[bytes | None] = queue.Queue()
        self._eof = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-reader", daemon=True)

    def start(self) -> None:
        """Start reading."""
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                try:
                    chunk = os.read(self._fd, self.CHUNK)
                except OSError:  # EIO: the pty's other side is gone; EBADF: closed here
                    break
                if not chunk:
                    break
                if self._log is not None:
                    with contextlib.suppress(ValueError, OSError):
                        self._log.write(chunk)
                        self._log.flush()
                self._chunks.put(chunk)
        finally:
            self._chunks.put(None)

    def receive(self, timeout: float) -> bytes:
        """What arrived (waiting up to ``timeout`` s for the first piece); b"" if nothing."""
        if self._eof:
            raise ConsoleClosed("the console closed")
        try:
            first = self._chunks.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return b""
        data = bytearray()
        chunk: bytes | None = first
        while chunk is not None:
            data += chunk
            try:
                chunk = self._chunks.get_nowait()
            except queue.Empty:
                return bytes(data)
        self._eof = True
        if data:
            return bytes(data)
        raise ConsoleClosed("the console closed")

    def join(self, timeout: float) -> None:
        """Wait (bounded) for the thread to finish after the descriptor closed."""
        if self._thread.is_alive():
            self._thread.join(timeout)
