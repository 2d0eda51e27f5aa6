"""Client side of the transmission phase, sans-IO.

Owns sending requests (validated against the negotiated export) and parsing the
server's simple replies, structured reply chunks and extended-header chunks into
events, with strict checks: any reply proto.md forbids is a ProtocolError and the
object is dead afterwards.  Many requests may be in flight; replies may come in
any order and interleave.

Memory bound: a chunk's payload may be at most the request length plus its
header fields (OFFSET_DATA), :data:`MAX_BLOCK_STATUS_PAYLOAD` for block status,
or :data:`MAX_SMALL_CHUNK` for the other chunk types; anything larger is rejected
from its header, before it is buffered.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Mapping
from errno import EINVAL
from types import MappingProxyType
from typing import Final

from appliance.errors import LocalProtocolError, ProtocolError
from appliance.nbd import proto
from appliance.nbd.events import (
    BlockStatus,
    ClientTransmissionEvent,
    ConnectionClosed,
    ErrorChunk,
    ExportInfo,
    Extents,
    ReadData,
    ReadHole,
    ReplyDone,
    Request,
)
from appliance.nbd.ranges import Ranges
from appliance.nbd.receiver import EventReceiver


def _word(code: str, extent: struct.Struct) -> str:
    """``code``, checked to be the array typecode of half an extent on this platform."""
    if array(code).itemsize * 2 != extent.size:
        raise RuntimeError(f"array typecode {code!r} does not fit {extent.format!r} here")
    return code


# Block-status payloads are decoded whole into arrays: (typecode, payload head) per layout.
_EXTENT_WORDS: Final = {
    False: (_word(proto.BLOCK_STATUS_WORD, proto.BLOCK_STATUS_EXTENT), proto.U32),
    True: (_word(proto.BLOCK_STATUS_EXT_WORD, proto.BLOCK_STATUS_EXT_EXTENT),
           proto.BLOCK_STATUS_EXT_HEAD),
}
_SWAP: Final = sys.byteorder == "little"  # the wire is big-endian

MAX_BLOCK_STATUS_PAYLOAD: Final = 4 * 1024 * 1024  # qemu sends at most 1 MiB of extents
MAX_SMALL_CHUNK: Final = 64 * 1024  # error chunks: 4096-byte message + fields
MAX_COOKIE: Final = (1 << 64) - 1

_READ: Final = int(proto.NBD_CMD_READ)
_WRITE: Final = int(proto.NBD_CMD_WRITE)
_DISC: Final = int(proto.NBD_CMD_DISC)
_FLUSH: Final = int(proto.NBD_CMD_FLUSH)
_TRIM: Final = int(proto.NBD_CMD_TRIM)
_CACHE: Final = int(proto.NBD_CMD_CACHE)
_WRITE_ZEROES: Final = int(proto.NBD_CMD_WRITE_ZEROES)
_BLOCK_STATUS: Final = int(proto.NBD_CMD_BLOCK_STATUS)

_SIMPLE: Final = proto.NBD_SIMPLE_REPLY_MAGIC
_STRUCTURED: Final = proto.NBD_STRUCTURED_REPLY_MAGIC
_EXTENDED: Final = proto.NBD_EXTENDED_REPLY_MAGIC
_DONE: Final = proto.NBD_REPLY_FLAG_DONE

_FUA: Final = int(proto.NBD_CMD_FLAG_FUA)
_DF: Final = int(proto.NBD_CMD_FLAG_DF)
_NO_HOLE: Final = int(proto.NBD_CMD_FLAG_NO_HOLE)
_FAST_ZERO: Final = int(proto.NBD_CMD_FLAG_FAST_ZERO)
_REQ_ONE: Final = int(proto.NBD_CMD_FLAG_REQ_ONE)
# Command flags each command may carry (FUA: proto.md allows it on every command).
# Plain ints: ``~`` of an IntFlag would only complement the *known* bits.
_ALLOWED_FLAGS: Final[dict[int, int]] = {
    _READ: _FUA | _DF,
    _WRITE: _FUA,
    _DISC: 0,
    _FLUSH: _FUA,
    _TRIM: _FUA,
    _CACHE: _FUA,
    _WRITE_ZEROES: _FUA | _NO_HOLE | _FAST_ZERO,
    _BLOCK_STATUS: _FUA | _REQ_ONE,
}
# Commands addressing a byte range of the export.
_RANGED: Final = frozenset({_READ, _WRITE, _TRIM, _CACHE, _WRITE_ZEROES, _BLOCK_STATUS})
_WRITING: Final = frozenset({_WRITE, _TRIM, _WRITE_ZEROES})
# NBD_REPLY_TYPE_ERROR_OFFSET is valid for these (proto.md).
_ERROR_OFFSET_OK: Final = frozenset({_READ, _WRITE, _TRIM, _CACHE, _WRITE_ZEROES, _BLOCK_STATUS})
_name: Final = proto.cmd_name  # for error messages only: never on the success path


class _Pending:
    """What the client tracks for one request awaiting its reply."""

    __slots__ = (
        "buf",
        "command",
        "content",
        "contexts",
        "cookie",
        "covered",
        "err_offset",
        "error",
        "flags",
        "length",
        "message",
        "offset",
        "request",
        "single",
    )

    def __init__(self, request: Request, cookie: int) -> None:
        self.request = request
        self.cookie = cookie
        self.command = request.command
        self.offset = request.offset
        self.length = request.length
        self.flags = request.flags
        self.error = 0
        self.message = ""
        self.err_offset: int | None = None
        self.covered: Ranges | None = Ranges() if request.command == _READ else None
        self.content = 0  # content chunks so far (NBD_CMD_FLAG_DF allows one)
        self.contexts: set[int] = set()
        self.buf: bytearray | None = None  # assemble_reads: the whole read
        self.single: bytes | None = None  # assemble_reads: one chunk covering it all

    def describe(self) -> str:
        return f"{proto.cmd_name(self.command)} (cookie {self.cookie})"


class ClientTransmission(EventReceiver[ClientTransmissionEvent]):
    """Send requests and parse replies on one negotiated connection.

    ``info`` is the ExportInfo from ``Negotiated``; it fixes the reply format
    (simple, structured or extended) and what requests are valid.  With
    ``assemble_reads`` each successful READ yields one ReadData covering the whole
    request instead of one per chunk (holes are zero-filled).
    """

    _failed_message = "the connection failed earlier; open a new one"

    def __init__(self, info: ExportInfo, *, assemble_reads: bool = False) -> None:
        super().__init__()
        self.info = info
        self._structured = info.structured_replies or info.extended_headers
        self._extended = info.extended_headers
        self._assemble = assemble_reads
        self._context_names = {cid: name for name, cid in info.meta_contexts.items()}
        self._max_length = (1 << 64) - 1 if self._extended else 0xFFFFFFFF
        self._max_payload = min(info.max_block_size, self._max_length)
        self._out: list[bytes | bytearray | memoryview] = []
        self._pending: dict[int, _Pending] = {}
        self._requests: dict[int, Request] = {}
        self._next_cookie = 1
        self._disconnected = False  # NBD_CMD_DISC sent

    # ----------------------------------------------------------------- public API

    @property
    def in_flight(self) -> Mapping[int, Request]:
        """Requests sent and still awaiting their ReplyDone, by cookie (read-only view)."""
        return MappingProxyType(self._requests)

    @property
    def closed(self) -> bool:
        """ConnectionClosed was delivered."""
        return self._closed

    def check(self, request: Request) -> None:
        """Raise LocalProtocolError if ``request`` may not be sent now; changes nothing."""
        self._check_usable()
        self._validate(request)

    def send(self, request: Request) -> int:
        """Queue ``request`` for sending and return its cookie.

        Raises LocalProtocolError (and the object is then unusable) if the request
        is invalid for this export; use :meth:`check` first to test without harm.
        """
        self._check_usable()
        try:
            length = self._validate(request)
        except LocalProtocolError:
            self._error = True
            raise
        cookie = request.cookie
        if cookie is None:
            cookie = self._assign_cookie()
        data = request.data
        if cookie != request.cookie or length != request.length:
            # a plain constructor call: dataclasses.replace() costs several times more
            request = Request(request.command, request.offset, length, request.flags, cookie,
                              data)
        if self._extended:
            header = proto.EXTENDED_REQUEST.pack(
                proto.NBD_EXTENDED_REQUEST_MAGIC, request.flags, request.command, cookie,
                request.offset, length)
        else:
            header = proto.REQUEST.pack(proto.NBD_REQUEST_MAGIC, request.flags,
                                        request.command, cookie, request.offset, length)
        self._out.append(header)
        if request.command == _WRITE and data is not None and length:
            self._out.append(data)
        if request.command == _DISC:
            self._disconnected = True
        else:
            self._pending[cookie] = _Pending(request, cookie)
            self._requests[cookie] = request
        return cookie

    def data_to_send(self) -> bytes:
        """All bytes queued by send() so far (may be empty)."""
        if not self._out:
            return b""
        out = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        return out if isinstance(out, bytes) else bytes(out)

    # ----------------------------------------------------------------- sending

    def _assign_cookie(self) -> int:
        cookie = self._next_cookie
        while cookie in self._pending:
            cookie = cookie + 1 if cookie < MAX_COOKIE else 1
        self._next_cookie = cookie + 1 if cookie < MAX_COOKIE else 1
        return cookie

    def _validate(self, req: Request) -> int:
        """Raise LocalProtocolError if ``req`` is invalid; return its wire length.

        The success path builds no strings: command names only when raising.
        """
        info = self.info
        cmd, flags, offset = req.command, req.flags, req.offset
        if self._disconnected:
            raise LocalProtocolError("no request may follow NBD_CMD_DISC")
        if cmd not in _ALLOWED_FLAGS:
            raise LocalProtocolError(f"unsupported command {_name(cmd)}")
        if req.cookie is not None:
            if not 0 <= req.cookie <= MAX_COOKIE:
                raise LocalProtocolError(f"cookie {req.cookie} is not a 64-bit unsigned value")
            if req.cookie in self._pending:
                raise LocalProtocolError(f"cookie {req.cookie} is already in flight")
        bad = flags & ~_ALLOWED_FLAGS[cmd]
        if bad or flags < 0:
            raise LocalProtocolError(f"command flags {bad:#x} are not valid for {_name(cmd)}")
        if flags:
            self._validate_flags(flags)
        length = req.length
        if cmd == _WRITE:
            if req.data is None:
                raise LocalProtocolError("NBD_CMD_WRITE needs data")
            if length and length != len(req.data):
                raise LocalProtocolError(f"NBD_CMD_WRITE length {length} but "
                                         f"{len(req.data)} bytes of data")
            length = len(req.data)
        elif req.data is not None:
            raise LocalProtocolError(f"{_name(cmd)} carries no data")
        if cmd != _READ:
            self._validate_command(cmd)
        if cmd in (_DISC, _FLUSH):
            if offset or length:
                raise LocalProtocolError(f"{_name(cmd)} must have offset and length 0")
            return length
        if offset < 0 or length <= 0:
            raise LocalProtocolError(f"{_name(cmd)} needs offset >= 0 and length > 0", error=EINVAL)
        if length > self._max_length:
            raise LocalProtocolError(f"{_name(cmd)} length {length} does not fit the "
                                     f"request header", error=EINVAL)
        if offset + length > info.size:
            raise LocalProtocolError(f"{_name(cmd)} of {length} bytes at offset {offset} goes past "
                                     f"the end of the export ({info.size} bytes)", error=EINVAL)
        minimum = info.min_block_size
        if offset % minimum or length % minimum:
            raise LocalProtocolError(f"{_name(cmd)} offset {offset} and length {length} must be "
                                     f"multiples of the minimum block size {minimum}", error=EINVAL)
        limited = cmd in (_READ, _WRITE, _CACHE) or (
            cmd == _WRITE_ZEROES and not flags & _FAST_ZERO)
        if limited and length > self._max_payload:
            raise LocalProtocolError(f"{_name(cmd)} length {length} exceeds the maximum block size "
                                     f"{self._max_payload}", error=EINVAL)
        return length

    def _validate_flags(self, flags: int) -> None:
        info = self.info
        if flags & _FUA and not info.can_fua:
            raise LocalProtocolError("the export does not support NBD_CMD_FLAG_FUA")
        if flags & _DF and not info.can_df:
            raise LocalProtocolError("the export does not support NBD_CMD_FLAG_DF")
        if flags & _FAST_ZERO and not info.can_fast_zero:
            raise LocalProtocolError("the export does not support NBD_CMD_FLAG_FAST_ZERO")

    def _validate_command(self, cmd: int) -> None:
        info = self.info
        if cmd in _WRITING and info.read_only:
            raise LocalProtocolError(f"the export is read-only; {_name(cmd)} is not allowed")
        if cmd == _FLUSH and not info.can_flush:
            raise LocalProtocolError("the export does not support NBD_CMD_FLUSH")
        if cmd == _TRIM and not info.can_trim:
            raise LocalProtocolError("the export does not support NBD_CMD_TRIM")
        if cmd == _WRITE_ZEROES and not info.can_write_zeroes:
            raise LocalProtocolError("the export does not support NBD_CMD_WRITE_ZEROES")
        if cmd == _CACHE and not info.can_cache:
            raise LocalProtocolError("the export does not support NBD_CMD_CACHE")
        if cmd == _BLOCK_STATUS and not info.can_block_status:
            raise LocalProtocolError("no metadata context was negotiated, so "
                                     "NBD_CMD_BLOCK_STATUS is not allowed")

    # ----------------------------------------------------------------- receiving

    def _need_data(self) -> bool:
        if not self._eof:
            return False
        if not len(self._in) and not self._pending:
            self._closed = True
            self._events.append(ConnectionClosed())
            return True
        if len(self._in):
            raise ProtocolError("the server closed the connection in the middle of a reply")
        raise ProtocolError(f"the server closed the connection with {len(self._pending)} "
                            f"request(s) in flight")

    def _lookup(self, cookie: int) -> _Pending:
        pending = self._pending.get(cookie)
        if pending is None:
            raise ProtocolError(f"reply for cookie {cookie}, which is not in flight")
        return pending

    def _wait_for(self, total: int) -> bool:
        """The reply at the head needs ``total`` bytes; remember it until they are here."""
        self._wanted = total
        return self._need_data()

    def _parse_one(self) -> bool:
        if self._waiting():
            return self._need_data()
        magic_fields = self._in.unpack(proto.MAGIC32)
        if magic_fields is None:
            return self._need_data()
        magic = magic_fields[0]
        if magic == _SIMPLE:
            return self._parse_simple()
        if magic == _STRUCTURED:
            if not self._structured or self._extended:
                raise ProtocolError("structured reply although "
                                    + ("extended headers were negotiated" if self._extended
                                       else "structured replies were not negotiated"))
            fields = self._in.unpack(proto.STRUCTURED_REPLY)
            if fields is None:
                return self._need_data()
            _, flags, rtype, cookie, length = fields
            return self._parse_chunk(proto.STRUCTURED_REPLY.size, flags, rtype, cookie, length)
        if magic == _EXTENDED:
            if not self._extended:
                raise ProtocolError("extended reply header although extended headers were "
                                    "not negotiated")
            fields = self._in.unpack(proto.EXTENDED_REPLY)
            if fields is None:
                return self._need_data()
            _, flags, rtype, cookie, _offset, length = fields
            return self._parse_chunk(proto.EXTENDED_REPLY.size, flags, rtype, cookie, length)
        raise ProtocolError(f"bad reply magic {magic:#010x}")

    def _parse_simple(self) -> bool:
        if self._extended:
            raise ProtocolError("simple reply although extended headers were negotiated")
        fields = self._in.unpack(proto.SIMPLE_REPLY)
        if fields is None:
            return self._need_data()
        _, error, cookie = fields
        p = self._lookup(cookie)
        if p.command == _READ and self._structured:
            raise ProtocolError(f"simple reply to {p.describe()} although structured replies "
                                f"were negotiated")
        if p.command == _BLOCK_STATUS and not error:
            raise ProtocolError(f"successful simple reply to {p.describe()}: block status "
                                f"needs a structured reply")
        size = proto.SIMPLE_REPLY.size
        if p.command == _READ and not error:
            if not self._in.has(size + p.length):
                return self._wait_for(size + p.length)
            self._in.skip(size)
            data = self._in.take(p.length)
            self._events.append(ReadData(cookie, p.offset, data))
            assert p.covered is not None
            p.covered.add(p.offset, p.offset + p.length)
            self._finish(p, assembled=False)
            return True
        self._in.skip(size)
        if error:
            p.error = proto.nbd_error_to_errno(error)
        self._finish(p, assembled=False)
        return True

    def _chunk_limit(self, p: _Pending, rtype: int) -> int:
        if rtype == proto.NBD_REPLY_TYPE_OFFSET_DATA:
            return proto.OFFSET.size + p.length
        if rtype in (proto.NBD_REPLY_TYPE_BLOCK_STATUS, proto.NBD_REPLY_TYPE_BLOCK_STATUS_EXT):
            return MAX_BLOCK_STATUS_PAYLOAD
        return MAX_SMALL_CHUNK

    def _parse_chunk(self, header: int, flags: int, rtype: int, cookie: int,
                     length: int) -> bool:
        p = self._lookup(cookie)
        if length > self._chunk_limit(p, rtype):
            raise ProtocolError(f"chunk of {length} bytes for {p.describe()} is too long")
        if not self._in.has(header + length):
            return self._wait_for(header + length)
        self._in.skip(header)
        if rtype == proto.NBD_REPLY_TYPE_OFFSET_DATA:
            self._on_data(p, length)
        else:
            payload = self._in.take(length)
            if rtype == proto.NBD_REPLY_TYPE_NONE:
                if length:
                    raise ProtocolError(f"NBD_REPLY_TYPE_NONE with {length} bytes of payload")
                if not flags & _DONE:
                    raise ProtocolError("NBD_REPLY_TYPE_NONE without NBD_REPLY_FLAG_DONE")
            elif rtype == proto.NBD_REPLY_TYPE_OFFSET_HOLE:
                self._on_hole(p, payload)
            elif rtype == proto.NBD_REPLY_TYPE_BLOCK_STATUS:
                self._on_block_status(p, payload, extended=False)
            elif rtype == proto.NBD_REPLY_TYPE_BLOCK_STATUS_EXT:
                self._on_block_status(p, payload, extended=True)
            elif proto.reply_type_is_error(rtype):
                self._on_error(p, rtype, payload)
            else:
                raise ProtocolError(f"unknown structured reply type {rtype} for "
                                    f"{p.describe()}")
        if flags & _DONE:
            self._finish(p, assembled=True)
        return True

    def _content_range(self, p: _Pending, offset: int, length: int, what: str) -> None:
        if p.command != _READ:
            raise ProtocolError(f"{what} chunk in the reply to {p.describe()}")
        if offset < p.offset or offset + length > p.offset + p.length:
            raise ProtocolError(f"{what} chunk [{offset}, +{length}) lies outside "
                                f"{p.describe()} [{p.offset}, +{p.length})")
        p.content += 1
        if p.flags & _DF and p.content > 1:
            raise ProtocolError(f"more than one content chunk for {p.describe()} with "
                                f"NBD_CMD_FLAG_DF")
        assert p.covered is not None
        if not p.covered.add(offset, offset + length):
            raise ProtocolError(f"{what} chunk [{offset}, +{length}) overlaps an earlier "
                                f"chunk of {p.describe()}")

    def _on_data(self, p: _Pending, length: int) -> None:
        if length <= proto.OFFSET.size:
            raise ProtocolError(f"NBD_REPLY_TYPE_OFFSET_DATA of {length} bytes (at least 9)")
        fields = self._in.unpack(proto.OFFSET)
        assert fields is not None
        offset = fields[0]
        size = length - proto.OFFSET.size
        self._content_range(p, offset, size, "data")
        self._in.skip(proto.OFFSET.size)
        data = self._in.take(size)
        if not self._assemble:
            self._events.append(ReadData(p.cookie, offset, data))
        elif size == p.length:
            p.single = data
        else:
            if p.buf is None:
                p.buf = bytearray(p.length)
            start = offset - p.offset
            p.buf[start : start + size] = data

    def _on_hole(self, p: _Pending, payload: bytes) -> None:
        if len(payload) == proto.OFFSET_HOLE.size:
            offset, size = proto.OFFSET_HOLE.unpack(payload)
        elif self._extended and len(payload) == proto.OFFSET_HOLE_EXT.size:
            offset, size = proto.OFFSET_HOLE_EXT.unpack(payload)
        else:
            raise ProtocolError(f"NBD_REPLY_TYPE_OFFSET_HOLE of {len(payload)} bytes "
                                f"(must be 12)")
        if not size:
            raise ProtocolError("NBD_REPLY_TYPE_OFFSET_HOLE of size 0")
        self._content_range(p, offset, size, "hole")
        if not self._assemble:
            self._events.append(ReadHole(p.cookie, offset, size))
        elif p.buf is None and size != p.length:
            p.buf = bytearray(p.length)  # zero-filled: nothing more to do for a hole

    def _on_block_status(self, p: _Pending, payload: bytes, *, extended: bool) -> None:
        name = "NBD_REPLY_TYPE_BLOCK_STATUS" + ("_EXT" if extended else "")
        if p.command != _BLOCK_STATUS:
            raise ProtocolError(f"{name} chunk in the reply to {p.describe()}")
        if extended != self._extended:
            raise ProtocolError(f"{name} chunk although extended headers were "
                                + ("not " if extended else "") + "negotiated")
        code, head = _EXTENT_WORDS[extended]
        words = array(code)
        count, rest = divmod(len(payload) - head.size, 2 * words.itemsize)
        if count < 1 or rest:
            raise ProtocolError(f"{name} of {len(payload)} bytes is not a context id and "
                                f"whole extents")
        fields = head.unpack_from(payload)
        cid = fields[0]
        if extended and fields[1] != count:
            raise ProtocolError(f"{name} claims {fields[1]} extents but carries {count}")
        context = self._context_names.get(cid)
        if context is None:
            raise ProtocolError(f"block status for metadata context id {cid}, which was not "
                                f"negotiated")
        if cid in p.contexts:
            raise ProtocolError(f"two block status chunks for context {context!r} in "
                                f"{p.describe()}")
        p.contexts.add(cid)
        with memoryview(payload) as view:
            words.frombytes(view[head.size:])
        if _SWAP:
            words.byteswap()
        extents = Extents(words)
        self._check_extents(p, extents, context)
        self._events.append(BlockStatus(p.cookie, cid, context, extents))

    @staticmethod
    def _check_extents(p: _Pending, extents: Extents, context: str) -> None:
        lengths = extents.lengths
        if not all(lengths):  # a zero length (all() is the fastest scan of an array)
            raise ProtocolError(f"block status extent of length 0 for {context!r}")
        if p.flags & _REQ_ONE:
            if len(extents) != 1 or lengths[0] > p.length:
                raise ProtocolError(f"block status for {context!r} breaks NBD_CMD_FLAG_REQ_ONE "
                                    f"({len(extents)} extents)")
        elif extents.length - lengths[-1] >= p.length:
            raise ProtocolError(f"block status for {context!r} describes extents past the "
                                f"end of the request")

    def _on_error(self, p: _Pending, rtype: int, payload: bytes) -> None:
        if len(payload) < proto.ERROR_HEAD.size:
            raise ProtocolError(f"error chunk of {len(payload)} bytes (at least 6)")
        error, msg_len = proto.ERROR_HEAD.unpack_from(payload)
        end = proto.ERROR_HEAD.size + msg_len
        offset: int | None = None
        if rtype == proto.NBD_REPLY_TYPE_ERROR:
            if len(payload) != end:
                raise ProtocolError(f"NBD_REPLY_TYPE_ERROR of {len(payload)} bytes with a "
                                    f"{msg_len}-byte message")
        elif rtype == proto.NBD_REPLY_TYPE_ERROR_OFFSET:
            if len(payload) != end + proto.OFFSET.size:
                raise ProtocolError(f"NBD_REPLY_TYPE_ERROR_OFFSET of {len(payload)} bytes "
                                    f"with a {msg_len}-byte message")
            (offset,) = proto.OFFSET.unpack_from(payload, end)
            if p.command not in _ERROR_OFFSET_OK:
                raise ProtocolError(f"NBD_REPLY_TYPE_ERROR_OFFSET in the reply to "
                                    f"{p.describe()}")
            if not p.offset <= offset < p.offset + p.length:
                raise ProtocolError(f"error offset {offset} lies outside {p.describe()}")
        elif len(payload) < end:
            raise ProtocolError(f"error chunk type {rtype} with a message longer than "
                                f"its payload")
        if msg_len > proto.NBD_MAX_STRING:
            raise ProtocolError(f"error message of {msg_len} bytes (limit 4096)")
        if not error:
            raise ProtocolError(f"error chunk with error 0 for {p.describe()}")
        message = payload[proto.ERROR_HEAD.size : end].decode("utf-8", "replace")
        errno_value = proto.nbd_error_to_errno(error)
        if not p.error:
            p.error, p.message, p.err_offset = errno_value, message, offset
        self._events.append(ErrorChunk(p.cookie, errno_value, message, offset))

    def _finish(self, p: _Pending, *, assembled: bool) -> None:
        del self._pending[p.cookie]
        del self._requests[p.cookie]
        if not p.error:
            if p.command == _READ:
                assert p.covered is not None
                if p.covered.total != p.length:
                    raise ProtocolError(f"successful reply to {p.describe()} covers only "
                                        f"{p.covered.total} of {p.length} bytes")
            elif p.command == _BLOCK_STATUS and len(p.contexts) != len(self._context_names):
                missing = sorted(n for c, n in self._context_names.items()
                                 if c not in p.contexts)
                raise ProtocolError(f"successful reply to {p.describe()} lacks block status "
                                    f"for {', '.join(missing)}")
            if assembled and self._assemble and p.command == _READ:
                data = p.single if p.single is not None else (
                    bytes(p.buf) if p.buf is not None else bytes(p.length))
                self._events.append(ReadData(p.cookie, p.offset, data))
        self._events.append(ReplyDone(p.cookie, p.command, p.error, p.message, p.err_offset))
