"""Server side of the transmission phase, sans-IO.

Owns parsing requests (simple or extended headers, WRITE payloads) into
:class:`~appliance.nbd.events.Request` events and building simple, structured and
extended replies.  The relay uses it to serve the kernel's nbd driver (simple
requests, simple replies); tests use it to build well-formed servers.  Replies are
checked (LocalProtocolError) so a server built on it cannot break proto.md by
accident; hostile test servers write raw bytes with :mod:`appliance.nbd.proto`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Final

from appliance.errors import LocalProtocolError, ProtocolError
from appliance.nbd import proto
from appliance.nbd.events import (
    ConnectionClosed,
    Extent,
    Request,
    ServerTransmissionEvent,
)
from appliance.nbd.receiver import EventReceiver

DEFAULT_MAX_PAYLOAD: Final = 32 * 1024 * 1024

_READ: Final = int(proto.NBD_CMD_READ)
_WRITE: Final = int(proto.NBD_CMD_WRITE)
_DISC: Final = int(proto.NBD_CMD_DISC)
_BLOCK_STATUS: Final = int(proto.NBD_CMD_BLOCK_STATUS)
_DONE: Final = proto.NBD_REPLY_FLAG_DONE
_PAYLOAD_LEN: Final = int(proto.NBD_CMD_FLAG_PAYLOAD_LEN)


class ServerTransmission(EventReceiver[ServerTransmissionEvent]):
    """Parse requests and build replies for one connection in transmission.

    ``structured_replies`` / ``extended_headers``: what negotiation agreed (extended
    headers imply structured replies).  ``max_payload``: the largest WRITE payload
    accepted; a larger one is a ProtocolError (denial-of-service guard).
    """

    def __init__(self, *, structured_replies: bool = False, extended_headers: bool = False,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        super().__init__()
        self._extended = extended_headers
        self._structured = structured_replies or extended_headers
        self._max_payload = max_payload
        self._out: list[bytes] = []
        self._pending: dict[int, Request] = {}
        self._disconnecting = False  # NBD_CMD_DISC received

    # ----------------------------------------------------------------- receiving

    @property
    def in_flight(self) -> Mapping[int, Request]:
        """Requests received and not yet completely answered, by cookie."""
        return MappingProxyType(self._pending)

    def _need_data(self) -> bool:
        if not self._eof:
            return False
        if len(self._in):
            raise ProtocolError("the client closed the connection in the middle of a request")
        self._closed = True
        self._events.append(ConnectionClosed())
        return True

    def _parse_one(self) -> bool:
        if self._waiting():
            return self._need_data()
        magic_fields = self._in.unpack(proto.MAGIC32)
        if magic_fields is None:
            return self._need_data()
        if self._disconnecting:
            raise ProtocolError("the client sent data after NBD_CMD_DISC")
        magic = magic_fields[0]
        expected = (proto.NBD_EXTENDED_REQUEST_MAGIC if self._extended
                    else proto.NBD_REQUEST_MAGIC)
        if magic != expected:
            raise ProtocolError(f"bad request magic {magic:#010x} (expected {expected:#010x})")
        layout = proto.EXTENDED_REQUEST if self._extended else proto.REQUEST
        fields = self._in.unpack(layout)
        if fields is None:
            return self._need_data()
        _, flags, command, cookie, offset, length = fields
        payload = 0
        if command == _WRITE:
            if length > self._max_payload:
                raise ProtocolError(f"NBD_CMD_WRITE payload of {length} bytes exceeds the "
                                    f"limit of {self._max_payload}")
            payload = length
        elif flags & _PAYLOAD_LEN:
            raise ProtocolError(f"{proto.cmd_name(command)} with NBD_CMD_FLAG_PAYLOAD_LEN "
                                f"is not supported")
        if not self._in.has(layout.size + payload):
            self._wanted = layout.size + payload
            return self._need_data()
        if cookie in self._pending:
            raise ProtocolError(f"the client reused cookie {cookie} while it is in flight")
        self._in.skip(layout.size)
        data = self._in.take(payload) if command == _WRITE else None
        request = Request(command, offset, length, flags, cookie, data)
        if command == _DISC:
            self._disconnecting = True
        else:
            self._pending[cookie] = request
        self._events.append(request)
        return True

    # ----------------------------------------------------------------- replies

    def data_to_send(self) -> bytes:
        """All reply bytes built so far (may be empty)."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _request(self, cookie: int) -> Request:
        self._check_usable()
        request = self._pending.get(cookie)
        if request is None:
            self._error = True
            raise LocalProtocolError(f"no request with cookie {cookie} is awaiting a reply")
        return request

    def _chunk(self, request: Request, rtype: int, payload: bytes, *, done: bool,
               data: bytes | bytearray | memoryview = b"") -> None:
        flags = _DONE if done else 0
        assert request.cookie is not None
        length = len(payload) + len(data)
        if self._extended:
            header = proto.EXTENDED_REPLY.pack(proto.NBD_EXTENDED_REPLY_MAGIC, flags, rtype,
                                               request.cookie, request.offset, length)
        else:
            if length > 0xFFFFFFFF:
                raise self._misuse(f"chunk of {length} bytes does not fit a structured reply")
            header = proto.STRUCTURED_REPLY.pack(proto.NBD_STRUCTURED_REPLY_MAGIC, flags,
                                                 rtype, request.cookie, length)
        self._out.append(header + payload)
        if data:
            self._out.append(bytes(data))
        if done:
            del self._pending[request.cookie]

    def _need_structured(self, what: str) -> None:
        if not self._structured:
            raise self._misuse(f"{what} needs structured replies, which were not negotiated")

    def reply(self, cookie: int, *, error: int = 0,
              data: bytes | bytearray | memoryview = b"") -> None:
        """Complete the request with one reply: success (READ: ``data``) or ``error`` (errno).

        Without structured replies this is a simple reply; with them a READ gets an
        OFFSET_DATA chunk, an error an NBD_REPLY_TYPE_ERROR chunk, anything else a
        simple reply (extended headers: an NBD_REPLY_TYPE_NONE chunk).
        """
        request = self._request(cookie)
        if request.command == _READ and not error:
            if len(data) != request.length:
                raise self._misuse(f"READ reply of {len(data)} bytes for a request of "
                                   f"{request.length}")
        elif data:
            raise self._misuse("only a successful READ reply carries data")
        if request.command == _BLOCK_STATUS and not error:
            raise self._misuse("answer NBD_CMD_BLOCK_STATUS with reply_block_status()")
        nbd_error = proto.errno_to_nbd_error(error)
        if self._structured and error:
            self.reply_error(cookie, error)
        elif self._structured and request.command == _READ and request.length:
            self._chunk(request, proto.NBD_REPLY_TYPE_OFFSET_DATA,
                        proto.OFFSET.pack(request.offset), done=True, data=data)
        elif self._extended or (self._structured and request.command == _READ):
            self._chunk(request, proto.NBD_REPLY_TYPE_NONE, b"", done=True)
        else:
            self._out.append(proto.SIMPLE_REPLY.pack(proto.NBD_SIMPLE_REPLY_MAGIC, nbd_error,
                                                     cookie))
            if data:
                self._out.append(bytes(data))
            del self._pending[cookie]

    def _check_content(self, request: Request, offset: int, length: int) -> None:
        if request.command != _READ:
            raise self._misuse("content chunks answer NBD_CMD_READ only")
        if length <= 0 or offset < request.offset or (
                offset + length > request.offset + request.length):
            raise self._misuse(f"chunk [{offset}, +{length}) outside the request")

    def reply_data(self, cookie: int, offset: int, data: bytes | bytearray | memoryview, *,
                   done: bool = False) -> None:
        """Send an NBD_REPLY_TYPE_OFFSET_DATA chunk for a READ."""
        request = self._request(cookie)
        self._need_structured("reply_data")
        self._check_content(request, offset, len(data))
        self._chunk(request, proto.NBD_REPLY_TYPE_OFFSET_DATA, proto.OFFSET.pack(offset),
                    done=done, data=data)

    def reply_hole(self, cookie: int, offset: int, length: int, *, done: bool = False) -> None:
        """Send an NBD_REPLY_TYPE_OFFSET_HOLE chunk for a READ."""
        request = self._request(cookie)
        self._need_structured("reply_hole")
        self._check_content(request, offset, length)
        self._chunk(request, proto.NBD_REPLY_TYPE_OFFSET_HOLE,
                    proto.OFFSET_HOLE.pack(offset, length), done=done)

    def reply_block_status(self, cookie: int, context_id: int, extents: Iterable[Extent], *,
                           done: bool = False) -> None:
        """Send one context's extents (NBD_REPLY_TYPE_BLOCK_STATUS, or _EXT)."""
        request = self._request(cookie)
        self._need_structured("reply_block_status")
        if request.command != _BLOCK_STATUS:
            raise self._misuse("block status chunks answer NBD_CMD_BLOCK_STATUS only")
        items = list(extents)
        if not items:
            raise self._misuse("a block status chunk needs at least one extent")
        if self._extended:
            body = proto.BLOCK_STATUS_EXT_HEAD.pack(context_id, len(items)) + b"".join(
                proto.BLOCK_STATUS_EXT_EXTENT.pack(e.length, e.flags) for e in items)
            rtype = proto.NBD_REPLY_TYPE_BLOCK_STATUS_EXT
        else:
            body = proto.U32.pack(context_id) + b"".join(
                proto.BLOCK_STATUS_EXTENT.pack(e.length, e.flags) for e in items)
            rtype = proto.NBD_REPLY_TYPE_BLOCK_STATUS
        self._chunk(request, rtype, body, done=done)

    def reply_error(self, cookie: int, error: int, message: str = "", *,
                    offset: int | None = None, done: bool = True) -> None:
        """Send an error chunk (errno ``error``; with ``offset``: ERROR_OFFSET)."""
        request = self._request(cookie)
        self._need_structured("reply_error")
        if not error:
            raise self._misuse("an error chunk needs a non-zero error")
        text = message.encode("utf-8")[: proto.NBD_MAX_STRING]
        body = proto.ERROR_HEAD.pack(proto.errno_to_nbd_error(error), len(text)) + text
        if offset is None:
            rtype = proto.NBD_REPLY_TYPE_ERROR
        else:
            rtype = proto.NBD_REPLY_TYPE_ERROR_OFFSET
            body += proto.OFFSET.pack(offset)
        self._chunk(request, rtype, body, done=done)

    def reply_done(self, cookie: int) -> None:
        """End a structured reply with an NBD_REPLY_TYPE_NONE chunk."""
        request = self._request(cookie)
        self._need_structured("reply_done")
        self._chunk(request, proto.NBD_REPLY_TYPE_NONE, b"", done=True)
