"""The receiving half both transmission sides share, sans-IO.

Owns what :class:`~appliance.nbd.transmission.ClientTransmission` and
:class:`~appliance.nbd.server.ServerTransmission` do alike with incoming bytes:
feeding them (``b""`` = the peer closed), the ``next_event`` loop, poisoning the
object after any error, and remembering how many bytes the message at the head of the
buffer needs once its header was checked, so that a large payload arriving in many
pieces (a 256 KiB READ over TLS: 16 records) has its header parsed only when it is
complete.  Subclasses parse one message per :meth:`_parse_one`.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar

from appliance.errors import ApplianceError, LocalProtocolError
from appliance.nbd.buffer import ReceiveBuffer
from appliance.nbd.events import NEED_DATA, NeedData


class EventReceiver[EventT]:
    """Bytes in, events out, for one side of the transmission phase."""

    _failed_message: ClassVar[str] = "the connection failed earlier"

    def __init__(self) -> None:
        self._in = ReceiveBuffer()
        self._events: deque[EventT] = deque()
        # Bytes the message at the head of the buffer needs in all (header + payload)
        # once its header was parsed and checked; 0 = not known.
        self._wanted = 0
        self._eof = False
        self._closed = False  # ConnectionClosed was queued
        self._error = False

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the peer; ``b""`` means the peer closed."""
        self._check_usable()
        if self._eof:
            self._error = True
            raise LocalProtocolError("receive_data() after EOF")
        if not data:
            self._eof = True
        else:
            self._in.feed(data)

    def next_event(self) -> EventT | NeedData:
        """The next event, or NEED_DATA when more bytes must be received."""
        self._check_usable()
        if not self._events:
            if self._closed:
                self._error = True
                raise LocalProtocolError("the connection is closed")
            try:
                while not self._events and self._parse_one():
                    pass
            except ApplianceError:
                self._error = True
                raise
        if self._events:
            return self._events.popleft()
        return NEED_DATA

    def _check_usable(self) -> None:
        if self._error:
            raise LocalProtocolError(self._failed_message)

    def _waiting(self) -> bool:
        """The head message was checked and is still incomplete: do not parse it again."""
        if self._wanted:
            if len(self._in) < self._wanted:
                return True
            self._wanted = 0
        return False

    def _parse_one(self) -> bool:
        """Parse one message into events; False when more bytes are needed."""
        raise NotImplementedError
