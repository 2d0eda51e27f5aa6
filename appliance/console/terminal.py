"""The board's side of the serial line: raw mode, timed key reads and a small line editor.

No curses: the console may be a dumb serial terminal or a script.  The terminal is
put in non-canonical, no-echo, no-signal mode with CR and LF passed as sent (output
processing stays on, so ``\\n`` goes out as ``\\r\\n``) and this module echoes and edits
itself: printable ASCII, Backspace/DEL, Ctrl-U (kill line), Ctrl-C (cancel line);
escape sequences (arrow keys) are swallowed.  Part of a line can be echoed as ``*``
(secrets).  Works on any file descriptor; termios is applied only if it is a tty.
Every wait has a timeout.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import termios
from collections.abc import Callable, Iterator

from appliance.deadline import Deadline

log = logging.getLogger(__name__)

MAX_LINE = 1024
KEY_SETTLE = 0.2  # seconds of input discarded after the key that stops the countdown
_BS, _DEL, _CTRL_C, _CTRL_U, _ESC = 0x08, 0x7F, 0x03, 0x15, 0x1B


class Terminal:
    """Byte-level reads with timeouts and line editing on a pair of file descriptors."""

    def __init__(self, fd_in: int, fd_out: int) -> None:
        self.fd_in = fd_in
        self.fd_out = fd_out
        self._pending = bytearray()
        self._after_cr = False
        self.eof = False

    @contextlib.contextmanager
    def raw(self) -> Iterator[None]:
        """Non-canonical, no-echo input for the duration; restored afterwards."""
        try:
            saved = termios.tcgetattr(self.fd_in)
        except termios.error:  # not a tty (a pipe, a socket): nothing to set
            yield
            return
        mode = termios.tcgetattr(self.fd_in)
        mode[0] &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR)  # see CR and LF as sent
        mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG)  # Ctrl-C reaches the editor
        mode[6][termios.VMIN] = 1
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd_in, termios.TCSANOW, mode)
        try:
            yield
        finally:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd_in, termios.TCSADRAIN, saved)

    def write(self, text: str) -> None:
        """Send *text* (ASCII; anything else becomes '?')."""
        data = memoryview(text.encode("ascii", "replace"))
        for _ in range(1000):  # bounded: a stuck line drops output rather than hang the boot
            if not data:
                return
            try:
                data = data[os.write(self.fd_out, data):]
            except BlockingIOError:
                select.select([], [self.fd_out], [], 1.0)
            except OSError as exc:
                if exc.errno not in (errno.EIO, errno.EBADF):
                    raise
                self.eof = True  # the line hung up: nobody is there to read it
                return
        log.warning("console output stuck; dropped %d bytes", len(data))

    def read_byte(self, timeout: float | None) -> int | None:
        """The next input byte, or None on timeout or end of input (then ``eof`` is set)."""
        if not self._pending and not self.eof:
            self._fill(timeout)
        if not self._pending:
            return None
        return self._pending.pop(0)

    def _fill(self, timeout: float | None) -> None:
        ready, _, _ = select.select([self.fd_in], [], [], timeout)
        if not ready:
            return
        try:
            chunk = os.read(self.fd_in, 256)
        except OSError as exc:
            if exc.errno not in (errno.EIO, errno.EBADF):
                raise
            chunk = b""  # the other side hung up (pty closed, USB serial unplugged)
        if not chunk:
            self.eof = True
        self._pending += chunk

    def drain(self, settle: float) -> None:
        """Discard input until none arrives for *settle* seconds (at most 10 rounds)."""
        self._pending.clear()
        for _ in range(10):
            if self.eof or self.read_byte(settle) is None:
                return
            self._pending.clear()

    def wait_for_key(self, seconds: int, message: str) -> bool:
        """Show *message* and count down; True if a key was pressed within *seconds*."""
        if seconds <= 0:
            return False
        self.write(f"{message} within {seconds} s:")
        for shown in range(seconds, 0, -1):
            self.write(f" {shown}")
            if self.read_byte(1.0) is not None:
                self.write(" interrupted\n")
                self.drain(KEY_SETTLE)
                return True
            if self.eof:
                break
        self.write(" booting\n")
        return False

    def read_line(self, prompt: str, timeout: float | None,
                  secret: Callable[[str], bool] | None = None) -> str | None:
        """Show *prompt* and read one edited line; None on idle timeout or end of input."""
        self.write(prompt)
        line: list[str] = []
        idle = Deadline(timeout)
        while True:
            byte = self.read_byte(idle.remaining)
            if byte is None:
                if not self.eof:
                    self.write("\n")
                return None
            idle = Deadline(timeout)
            after_cr, self._after_cr = self._after_cr, byte == ord("\r")
            if byte == ord("\n") and after_cr:
                continue  # CR LF ends one line, not two
            if byte in (ord("\r"), ord("\n")):
                self.write("\n")
                return "".join(line)
            if byte == _CTRL_C:
                self.write("^C\n")
                return ""
            self._edit(byte, line, secret)

    def _edit(self, byte: int, line: list[str], secret: Callable[[str], bool] | None) -> None:
        if byte in (_BS, _DEL):
            if line:
                line.pop()
                self.write("\b \b")
        elif byte == _CTRL_U:
            self.write("\b \b" * len(line))
            line.clear()
        elif byte == _ESC:
            self._swallow_escape()
        elif 0x20 <= byte < 0x7F and len(line) < MAX_LINE:
            char = chr(byte)
            shown = "*" if secret is not None and secret("".join(line)) else char
            line.append(char)
            self.write(shown)

    def _swallow_escape(self) -> None:
        """Drop an escape sequence (ESC [ ... final byte), arriving within 50 ms."""
        first = self.read_byte(0.05)
        if first not in (ord("["), ord("O")):
            return
        for _ in range(16):
            byte = self.read_byte(0.05)
            if byte is None or 0x40 <= byte <= 0x7E:
                return
