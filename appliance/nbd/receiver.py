"""The one sticky-error receive loop every protocol machine shares, sans-IO.

Owns what all four machines (client and server negotiation, client and server
transmission) do alike with incoming bytes: feeding them (``b""`` = the peer
closed), the ``next_event`` loop, and poisoning the object after any exception, so
that every further call raises LocalProtocolError (h11's ERROR state: no
half-states).  :class:`StickyReceiver` is that loop; a machine parses one message per
:meth:`~StickyReceiver._parse_one` and may refuse data or parsing in some states
through two hooks.  :class:`EventReceiver` adds what both transmission sides need:
remembering how many bytes the message at the head of the buffer needs once its
header was checked, so that a large payload arriving in many pieces (a 256 KiB READ
over TLS: 16 records) has its header parsed only when it is complete.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import ClassVar

from appliance.errors import LocalProtocolError
from appliance.nbd.buffer import ReceiveBuffer
from appliance.nbd.events import NEED_DATA, NeedData


class StickyReceiver[EventT]:
    """Bytes in, events out; stuck for good after any exception."""

    _failed_message: ClassVar[str] = "the connection failed earlier"

    def __init__(self) -> None:
        self._in = ReceiveBuffer()
        self._events: deque[EventT] = deque()
        self._eof = False
        self._error = False  # an exception left this object; it is unusable

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the peer; ``b""`` means the peer closed."""
        if self._error:
            raise LocalProtocolError(self._failed_message)
        try:
            self._check_receive()
            if self._eof:
                raise LocalProtocolError("receive_data() after EOF")
        except BaseException:
            self._error = True
            raise
        if not data:
            self._eof = True
        else:
            self._in.feed(data)

    def next_event(self) -> EventT | NeedData:
        """The next event, or NEED_DATA when more bytes must be received."""
        if self._error:
            raise LocalProtocolError(self._failed_message)
        events = self._events
        if not events:
            try:
                self._check_parse()
                while not events and self._parse_one():
                    pass
            except BaseException:
                self._error = True
                raise
            if not events:
                return NEED_DATA
        return events.popleft()

    # ----------------------------------------------------------------- for machines

    def _check_usable(self) -> None:
        """Raise LocalProtocolError if an earlier exception left this object unusable."""
        if self._error:
            raise LocalProtocolError(self._failed_message)

    def _sticky(self, call: Callable[[], None]) -> None:
        """Run ``call`` (a state change outside the loop); any exception poisons the object."""
        self._check_usable()
        try:
            call()
        except BaseException:
            self._error = True
            raise

    def _misuse(self, message: str) -> LocalProtocolError:
        """Poison the object and return the LocalProtocolError to raise."""
        self._error = True
        return LocalProtocolError(message)

    def _check_receive(self) -> None:
        """Hook: raise LocalProtocolError if no bytes may be fed in this state."""

    def _check_parse(self) -> None:
        """Hook: raise LocalProtocolError if nothing may be parsed now (no event is queued)."""

    def _parse_one(self) -> bool:
        """Parse one message into events; False when more bytes are needed."""
        raise NotImplementedError


class EventReceiver[EventT](StickyReceiver[EventT]):
    """The receive loop for one side of the transmission phase."""

    def __init__(self) -> None:
        super().__init__()
        # Bytes the message at the head of the buffer needs in all (header + payload)
        # once its header was parsed and checked; 0 = not known.
        self._wanted = 0
        self._closed = False  # ConnectionClosed was queued

    def _check_parse(self) -> None:
        if self._closed:
            raise LocalProtocolError("the connection is closed")

    def _waiting(self) -> bool:
        """The head message was checked and is still incomplete: do not parse it again."""
        if self._wanted:
            if len(self._in) < self._wanted:
                return True
            self._wanted = 0
        return False
