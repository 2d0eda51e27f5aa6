"""The copy engine behind ``appliance nbd copy``: many requests in flight, holes skipped.

Owns splitting the source into units, the worker threads (one NBD connection each, to
the source and to an NBD destination), the per-worker pipeline and the progress counter.

A worker takes a unit (``UNIT`` bytes) at a time.  For an NBD source that negotiated
``base:allocation`` it first asks NBD_CMD_BLOCK_STATUS for the unit, then reads only the
extents not flagged NBD_STATE_ZERO (up to ``requests`` READs in flight, ``request_size``
each); zero extents and NBD_REPLY_TYPE_OFFSET_HOLE chunks become WRITE_ZEROES on an NBD
destination, or nothing when the destination is known to be zero (a fresh file,
/dev/null, ``--destination-is-zero``).  Local file sources use SEEK_DATA/SEEK_HOLE.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from appliance.client import Connection
from appliance.errors import ApplianceError
from appliance.nbd import (
    NBD_CMD_BLOCK_STATUS,
    NBD_CMD_READ,
    BlockStatus,
    ClientTransmissionEvent,
    ReadData,
    ReadHole,
    Request,
    proto,
)

from .endpoints import BASE_ALLOCATION, Endpoint, Writer, file_extents

UNIT = 64 << 20
STOP_TIMEOUT = 10.0  # Ctrl-C: longest wait for one worker to wind down


@dataclass(frozen=True)
class CopyOptions:
    """Tuning knobs (defaults like nbdcopy's: 4 connections, 64 requests, 256 KiB)."""

    connections: int = 4
    requests: int = 64
    request_size: int = 256 << 10


class Progress:
    """Bytes done so far, shared by the workers."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self._lock = threading.Lock()

    def add(self, n: int) -> None:
        with self._lock:
            self.done += n


class Units:
    """Hands out ``[offset, offset+length)`` units to workers, in order."""

    def __init__(self, size: int, unit: int) -> None:
        self._size, self._unit, self._next = size, unit, 0
        self._lock = threading.Lock()

    def stop(self) -> None:
        """Hand out nothing more (an error or Ctrl-C)."""
        with self._lock:
            self._next = self._size

    def take(self) -> tuple[int, int] | None:
        with self._lock:
            if self._next >= self._size:
                return None
            off = self._next
            self._next = min(self._size, off + self._unit)
            return off, self._next - off


class NBDSourceWorker:
    """Copies units from one NBD source connection into one destination writer."""

    def __init__(self, src: Connection, writer: Writer, units: Units, opts: CopyOptions,
                 progress: Progress) -> None:
        self.src, self.writer, self.units = src, writer, units
        self.opts, self.progress = opts, progress
        self.ops: deque[tuple[int, int, bool]] = deque()  # (offset, length, is_data)
        self.bs = src.info.can_block_status and BASE_ALLOCATION in src.info.meta_contexts
        self.querying: tuple[int, int] | None = None  # unit awaiting its block status
        self.exhausted = False
        self.rest: tuple[int, int] | None = None  # part of a unit the last reply didn't cover
        self.max_read = min(opts.request_size, src.info.max_block_size)

    def run(self) -> None:
        src = self.src
        while True:
            self._plan()
            while self.ops and src.in_flight < self.opts.requests:
                self._issue()
            src.send_queued()  # the batch of READs in one system call
            if not src.in_flight:
                if self.exhausted and not self.ops and self.querying is None:
                    return
                continue
            for c in src.wait():
                if not c.done.ok:
                    raise src.error_for(c)
                if c.request.command == NBD_CMD_READ:
                    self.progress.add(c.request.length)
                elif c.request.command == NBD_CMD_BLOCK_STATUS:
                    self.querying = None

    def _plan(self) -> None:
        """Keep at least a few requests' worth of work queued."""
        if self.ops or self.querying is not None or self.exhausted:
            return
        unit, self.rest = (self.rest, None) if self.rest else (self.units.take(), None)
        if unit is None:
            self.exhausted = True
            return
        if not self.bs:
            self.ops.append((unit[0], unit[1], True))
            return
        self.querying = unit
        self.src.submit(Request(NBD_CMD_BLOCK_STATUS, unit[0], unit[1]), self._extents)

    def _extents(self, ev: ClientTransmissionEvent) -> None:
        if type(ev) is not BlockStatus or ev.context != BASE_ALLOCATION or self.querying is None:
            return
        off, length = self.querying
        end = off + length
        pos = off
        for e in ev.extents:
            if pos >= end:
                break
            n = min(e.length, end - pos)
            self._queue(pos, n, not e.flags & proto.NBD_STATE_ZERO)
            pos += n
        if pos < end:  # the server described less than asked: ask again for the rest
            progressed = pos > off  # else asking again could loop: read it as data
            self.rest = (pos, end - pos) if progressed else None
            if not progressed:
                self._queue(pos, end - pos, True)

    def _queue(self, off: int, n: int, data: bool) -> None:
        if self.ops and self.ops[-1][2] == data and sum(self.ops[-1][:2]) == off:
            last = self.ops.pop()
            self.ops.append((last[0], last[1] + n, data))
        else:
            self.ops.append((off, n, data))

    def _issue(self) -> None:
        off, n, data = self.ops.popleft()
        if not data:
            self.writer.zero(off, n)
            self.progress.add(n)
            return
        take = min(n, self.max_read)
        if take < n:
            self.ops.appendleft((off + take, n - take, True))
        self.src.submit(Request(NBD_CMD_READ, off, take), self._chunk, send=False)

    def _chunk(self, ev: ClientTransmissionEvent) -> None:
        if type(ev) is ReadData:
            self.writer.write(ev.offset, ev.data)
        elif type(ev) is ReadHole:
            self.writer.zero(ev.offset, ev.length)


def copy_file_units(src: Endpoint, writer: Writer, units: Units, opts: CopyOptions,
                    progress: Progress) -> None:
    """Copy units from a local file source (data runs read with pread, holes skipped)."""
    assert src.fd is not None
    while (unit := units.take()) is not None:
        off, length = unit
        for pos, n, data in file_extents(src.fd, off, off + length):
            if not data:
                writer.zero(pos, n)
                progress.add(n)
                continue
            for p in range(pos, pos + n, opts.request_size):
                try:
                    chunk = os.pread(src.fd, min(opts.request_size, pos + n - p), p)
                except OSError as exc:
                    raise ApplianceError(f"cannot read {src.name} at offset {p}: "
                                         f"{exc.strerror or exc}") from None
                if not chunk:
                    raise ApplianceError(f"{src.name}: shorter than expected at offset {p}")
                writer.write(p, chunk)
                progress.add(len(chunk))


def run_copy(src: Endpoint, dst: Endpoint, opts: CopyOptions, progress: Progress,
             on_error: Callable[[BaseException], None] | None = None) -> None:
    """Copy ``src`` to ``dst`` with ``opts.connections`` workers; re-raise the first error."""
    units = Units(src.size, UNIT)
    errors: list[BaseException] = []

    def work() -> None:
        writer: Writer | None = None
        conn: Connection | None = None
        try:
            writer = Writer(dst, opts.requests)
            if src.kind == "nbd":
                conn = src.connection((BASE_ALLOCATION,))
                NBDSourceWorker(conn, writer, units, opts, progress).run()
            else:
                copy_file_units(src, writer, units, opts, progress)
            writer.finish()
        except BaseException as exc:
            errors.append(exc)
            units.stop()  # make the other workers stop soon
            if on_error is not None:
                on_error(exc)
        finally:
            if conn is not None:
                conn.close()
            if writer is not None:
                writer.close()

    threads = [threading.Thread(target=work, name=f"copy-{i}", daemon=True)
               for i in range(opts.connections)]
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except KeyboardInterrupt:
        # Ctrl-C: hand out no more work and let each worker finish its requests in flight
        # and close its own connections (bounded: Connection.close drains at most
        # DRAIN_TIMEOUT), rather than closing them under the workers' feet.
        units.stop()
        for t in threads:
            t.join(STOP_TIMEOUT)
        raise
    if errors:
        raise errors[0]
