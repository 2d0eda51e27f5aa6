"""Reassembling one READ's chunks into one buffer (structured -> simple reply).

``ClientTransmission(info, assemble_reads=True)`` does this internally; this class
is for callers that consume chunk events themselves.  It trusts the transmission
core's checks (chunks inside the request, no overlap) and only re-checks bounds.
"""

from __future__ import annotations

from appliance.errors import LocalProtocolError
from appliance.nbd.events import ReadData, ReadHole


class ReadAssembler:
    """Collect ReadData / ReadHole chunks of one READ into a contiguous buffer."""

    __slots__ = ("_buf", "_filled", "_single", "length", "offset")

    def __init__(self, offset: int, length: int) -> None:
        self.offset = offset
        self.length = length
        self._buf: bytearray | None = None
        self._single: bytes | None = None
        self._filled = 0

    def add(self, event: ReadData | ReadHole) -> None:
        """Place one chunk."""
        size = len(event.data) if isinstance(event, ReadData) else event.length
        start = event.offset - self.offset
        if start < 0 or start + size > self.length:
            raise LocalProtocolError(f"chunk [{event.offset}, +{size}) outside the read "
                                     f"[{self.offset}, +{self.length})")
        self._filled += size
        if isinstance(event, ReadData):
            if size == self.length and self._buf is None:
                self._single = event.data
                return
            self._materialize()
            assert self._buf is not None
            self._buf[start : start + size] = event.data
        elif size != self.length:
            self._materialize()

    def _materialize(self) -> None:
        if self._buf is None:
            self._buf = bytearray(self.length)
            if self._single is not None:
                self._buf[:] = self._single
                self._single = None

    @property
    def filled(self) -> int:
        """Bytes placed so far (holes included)."""
        return self._filled

    def result(self) -> bytes:
        """The whole read (unwritten parts are zeroes)."""
        if self._single is not None:
            return self._single
        if self._buf is None:
            return bytes(self.length)
        return bytes(self._buf)
