"""The two ends of ``appliance nbd copy``: NBD exports, local files, ``/dev/null`` and ``-``.

Owns opening each end, its size, whether it is known to read as zeroes, and -- for
destinations -- how one worker writes data and zeroes to it.  An :class:`Endpoint`
describes the end; :meth:`Endpoint.writer` / the NBD connection give each worker its own
handle (every worker has its own NBD connection).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from appliance.client import Connection, connect
from appliance.errors import ApplianceError, UsageError
from appliance.nbd import NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, Request
from appliance.nbd.pieces import cut, first_piece, piece_size
from appliance.nbd.uri import NBDURI, parse_uri

from .zeroes import runs as zero_runs

ZERO_CHUNK = 1 << 20
BASE_ALLOCATION = "base:allocation"


def is_uri(text: str) -> bool:
    """True for anything that looks like an NBD URI (``nbd...://``)."""
    return text.split("://", 1)[0].lower().startswith("nbd") and "://" in text


@dataclass
class Endpoint:
    """One end of a copy."""

    name: str
    size: int
    uri: NBDURI | None = None
    path: str | None = None
    kind: str = "nbd"  # nbd | file | null | stdout
    known_zero: bool = False
    fd: int | None = None
    first: Connection | None = None  # the connection opened to learn the size; reused
    handed: bool = False  # ``first`` was given to a worker
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def multi_conn(self) -> bool:
        if self.kind == "nbd":
            assert self.first is not None
            return self.first.info.can_multi_conn
        return self.kind in ("file", "null")

    def connection(self, meta_contexts: tuple[str, ...] = ()) -> Connection:
        """A connection for one worker (the first caller gets the probing one)."""
        assert self.uri is not None
        with self.lock:
            if self.first is not None and not self.handed:
                self.handed = True
                return self.first
        return connect(self.uri, meta_contexts=meta_contexts)

    def close(self) -> None:
        if self.first is not None:
            self.first.close()
        if self.fd is not None and self.kind in ("file", "null"):
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


def open_source(text: str) -> Endpoint:
    """Open the copy source: an NBD URI or a readable local file."""
    if is_uri(text):
        uri = parse_uri(text)
        conn = connect(uri, meta_contexts=(BASE_ALLOCATION,))
        return Endpoint(text, conn.info.size, uri=uri, first=conn)
    if text == "-":
        raise UsageError("reading the source from stdin ('-') is not supported; give a file")
    try:
        fd = os.open(text, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot open source {text}: {exc.strerror}") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise UsageError(f"cannot copy from {text}: Is a directory")
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise UsageError(f"cannot copy from {text}: not a regular file or block device "
                                 "(pipes and character devices have no size)")
        size = os.lseek(fd, 0, os.SEEK_END)
    except BaseException:
        os.close(fd)
        raise
    return Endpoint(text, size, path=text, kind="file", fd=fd)


def open_destination(text: str, size: int, *, destination_is_zero: bool) -> Endpoint:
    """Open the copy destination for ``size`` bytes: an NBD URI, a file, /dev/null or ``-``."""
    if is_uri(text):
        uri = parse_uri(text)
        conn = connect(uri)
        if conn.info.read_only:
            conn.close()
            raise UsageError(f"{uri.address}: export is read-only; cannot copy to it ({uri})")
        if conn.info.size < size:
            conn.close()
            raise UsageError(f"{uri.address}: export is {conn.info.size} bytes, smaller than the "
                             f"{size}-byte source ({uri})")
        return Endpoint(text, conn.info.size, uri=uri, first=conn, known_zero=destination_is_zero)
    if text == "-":
        return Endpoint("-", size, kind="stdout", fd=_stdout_fd())
    return _open_file_destination(text, size)


def _stdout_fd() -> int:
    """The file descriptor of standard output, which must be open and writable."""
    if sys.stdout is None:  # Python found file descriptor 1 closed at start-up
        raise ApplianceError("cannot write to standard output: it is closed")
    try:
        fd = sys.stdout.fileno()
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except (OSError, ValueError, AttributeError):
        raise ApplianceError("cannot write to standard output: it is closed") from None
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise ApplianceError("cannot write to standard output: it is open read-only")
    return fd


def _open_file_destination(path: str, size: int) -> Endpoint:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UsageError(f"cannot open destination {path}: {exc.strerror}") from None
    if st is not None and stat.S_ISCHR(st.st_mode) and os.path.realpath(path) == "/dev/null":
        return Endpoint(path, size, path=path, kind="null", known_zero=True,
                        fd=os.open(path, os.O_WRONLY))
    regular = st is None or stat.S_ISREG(st.st_mode)
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_TRUNC if regular else 0)
    try:
        fd = os.open(path, flags, 0o644)
        if regular:
            os.ftruncate(fd, size)  # a fresh sparse file: holes need no writes
        elif os.lseek(fd, 0, os.SEEK_END) < size:
            os.close(fd)
            raise UsageError(f"destination {path} is smaller than the {size}-byte source")
    except OSError as exc:
        raise UsageError(f"cannot open destination {path}: {exc.strerror}") from None
    return Endpoint(path, size, path=path, kind="file", known_zero=regular, fd=fd)


def file_extents(fd: int, offset: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, is_data) runs of a local file, from SEEK_DATA/SEEK_HOLE."""
    pos = offset
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError:  # ENXIO: only a hole is left; EINVAL: no sparse support
            data = end if _sparse_ok(fd) else pos
        data = min(data, end)
        if data > pos:
            yield pos, data - pos, False
        if data >= end:
            return
        try:
            hole = min(os.lseek(fd, data, os.SEEK_HOLE), end)
        except OSError:
            hole = end
        yield data, hole - data, True
        pos = hole


def _sparse_ok(fd: int) -> bool:
    try:
        os.lseek(fd, 0, os.SEEK_HOLE)
        return True
    except OSError:
        return False


class Writer:
    """How one worker writes to the destination (NBD writes are pipelined).

    ``write`` detects zero blocks (like nbdcopy ``-S``): they become holes or
    WRITE_ZEROES, never data.  Every NBD request is cut to the destination's block-size
    limits by :func:`appliance.nbd.pieces.cut`, as the relay cuts kernel requests.
    """

    def __init__(self, dest: Endpoint, max_requests: int) -> None:
        self.dest = dest
        self.max_requests = max_requests
        self.conn = dest.connection() if dest.kind == "nbd" else None
        # Longest NBD request: the server's maximum, on its preferred block size.
        self.piece = piece_size(self.conn.info) if self.conn is not None else ZERO_CHUNK
        self._pending: dict[int, bytes] = {}  # stdout: offset -> data, written in order
        self._next = 0

    def write(self, offset: int, data: bytes | memoryview) -> None:
        """Write ``data`` at ``offset``; its zero blocks become holes or zeroes."""
        if self.dest.kind in ("stdout", "null"):
            self._write_data(offset, data)
            return
        view = memoryview(data)
        for pos, n, zero in zero_runs(offset, view):
            if zero:
                self.zero(pos, n)
            else:
                self._write_data(pos, view[pos - offset:pos - offset + n])

    def _write_data(self, offset: int, data: bytes | memoryview) -> None:
        kind = self.dest.kind
        if kind == "nbd":
            if first_piece(offset, len(data), self.piece) == len(data):
                self._submit(Request(NBD_CMD_WRITE, offset, len(data), data=data))
                return
            view = memoryview(data)
            for pos, n in cut(offset, len(data), self.piece):
                piece = view[pos - offset:pos - offset + n]
                self._submit(Request(NBD_CMD_WRITE, pos, n, data=piece))
        elif kind == "file":
            assert self.dest.fd is not None
            _pwrite_all(self.dest.fd, data, offset, self.dest.name)
        elif kind == "stdout":
            self._ordered(offset, bytes(data))

    def zero(self, offset: int, length: int) -> None:
        """Make ``[offset, offset+length)`` read as zeroes (nothing if it already does)."""
        kind = self.dest.kind
        if self.dest.known_zero or kind == "null" or length == 0:
            return
        if kind == "nbd":
            assert self.conn is not None
            if self.conn.info.can_write_zeroes:
                for pos, n in cut(offset, length, self.piece):
                    self._submit(Request(NBD_CMD_WRITE_ZEROES, pos, n))
                return
        for off in range(offset, offset + length, ZERO_CHUNK):
            self._write_data(off, _ZERO_BUFFER[:min(ZERO_CHUNK, offset + length - off)])

    def _submit(self, request: Request) -> None:
        conn = self.conn
        assert conn is not None
        while conn.in_flight >= self.max_requests:
            self._reap()
        conn.submit(request)

    def _reap(self) -> None:
        assert self.conn is not None
        for c in self.conn.wait():
            if not c.done.ok:
                raise self.conn.error_for(c)

    def _ordered(self, offset: int, data: bytes) -> None:
        self._pending[offset] = data
        while self._next in self._pending:
            chunk = self._pending.pop(self._next)
            assert self.dest.fd is not None
            _write_all(self.dest.fd, chunk, self.dest.name)
            self._next += len(chunk)

    def finish(self) -> None:
        """Wait for every write, then flush the destination."""
        if self.conn is not None:
            while self.conn.in_flight:
                self._reap()
            if self.conn.info.can_flush:
                self.conn.flush()
        elif self.dest.kind == "stdout" and self._pending:
            raise ApplianceError("internal: unwritten data for stdout")  # pragma: no cover

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


_ZERO_BUFFER = memoryview(bytes(ZERO_CHUNK))


def _write_error(name: str, exc: OSError) -> ApplianceError:
    where = "standard output" if name == "-" else name
    return ApplianceError(f"cannot write to {where}: {exc.strerror or exc}")


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int, name: str) -> None:
    view = memoryview(data)
    try:
        while view:
            n = os.pwrite(fd, view, offset)
            view, offset = view[n:], offset + n
    except OSError as exc:
        raise _write_error(name, exc) from None


def _write_all(fd: int, data: bytes, name: str) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise _write_error(name, exc) from None
