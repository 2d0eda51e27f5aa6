"""NBD wire constants and layouts: the one place for numbers from proto.md.

Every value carries its name from NetworkBlockDevice/nbd ``doc/proto.md`` and is
available both as an enum member (for pretty printing) and as a module-level
name (``proto.NBD_OPT_GO``).  Also here: the ``struct`` layouts of every fixed
wire message, the NBD error <-> errno mapping and a user-readable message for
every ``NBD_REP_ERR_*`` option reply.  Nothing here keeps state.
"""

from __future__ import annotations

import errno
import struct
from enum import IntEnum, IntFlag
from typing import Final

# --------------------------------------------------------------------------- magics

NBDMAGIC: Final = 0x4E42444D41474943  # "NBDMAGIC", first 8 bytes from the server
IHAVEOPT: Final = 0x49484156454F5054  # "IHAVEOPT", newstyle magic; also every option's magic
CLISERV_MAGIC: Final = 0x00420281861253  # oldstyle magic (cliserv_magic); unsupported
NBD_OPTS_MAGIC: Final = IHAVEOPT
NBD_REP_MAGIC: Final = 0x0003E889045565A9  # option reply magic
NBD_REQUEST_MAGIC: Final = 0x25609513
NBD_EXTENDED_REQUEST_MAGIC: Final = 0x21E41C71
NBD_SIMPLE_REPLY_MAGIC: Final = 0x67446698
NBD_REPLY_MAGIC: Final = NBD_SIMPLE_REPLY_MAGIC  # old name
NBD_STRUCTURED_REPLY_MAGIC: Final = 0x668E33EF
NBD_EXTENDED_REPLY_MAGIC: Final = 0x6E8A278C


# --------------------------------------------------------------------------- flags


class HandshakeFlag(IntFlag):
    """Server handshake flags (16 bits, sent after IHAVEOPT)."""

    NBD_FLAG_FIXED_NEWSTYLE = 1 << 0
    NBD_FLAG_NO_ZEROES = 1 << 1


class ClientFlag(IntFlag):
    """Client flags (32 bits, the client's answer to the handshake flags)."""

    NBD_FLAG_C_FIXED_NEWSTYLE = 1 << 0
    NBD_FLAG_C_NO_ZEROES = 1 << 1


class TransmissionFlag(IntFlag):
    """Transmission flags (16 bits) describing an export."""

    NBD_FLAG_HAS_FLAGS = 1 << 0
    NBD_FLAG_READ_ONLY = 1 << 1
    NBD_FLAG_SEND_FLUSH = 1 << 2
    NBD_FLAG_SEND_FUA = 1 << 3
    NBD_FLAG_ROTATIONAL = 1 << 4
    NBD_FLAG_SEND_TRIM = 1 << 5
    NBD_FLAG_SEND_WRITE_ZEROES = 1 << 6
    NBD_FLAG_SEND_DF = 1 << 7
    NBD_FLAG_CAN_MULTI_CONN = 1 << 8
    NBD_FLAG_SEND_RESIZE = 1 << 9
    NBD_FLAG_SEND_CACHE = 1 << 10
    NBD_FLAG_SEND_FAST_ZERO = 1 << 11
    NBD_FLAG_BLOCK_STAT_PAYLOAD = 1 << 12


NBD_FLAG_FIXED_NEWSTYLE: Final = HandshakeFlag.NBD_FLAG_FIXED_NEWSTYLE
NBD_FLAG_NO_ZEROES: Final = HandshakeFlag.NBD_FLAG_NO_ZEROES
NBD_FLAG_C_FIXED_NEWSTYLE: Final = ClientFlag.NBD_FLAG_C_FIXED_NEWSTYLE
NBD_FLAG_C_NO_ZEROES: Final = ClientFlag.NBD_FLAG_C_NO_ZEROES
NBD_FLAG_HAS_FLAGS: Final = TransmissionFlag.NBD_FLAG_HAS_FLAGS
NBD_FLAG_READ_ONLY: Final = TransmissionFlag.NBD_FLAG_READ_ONLY
NBD_FLAG_SEND_FLUSH: Final = TransmissionFlag.NBD_FLAG_SEND_FLUSH
NBD_FLAG_SEND_FUA: Final = TransmissionFlag.NBD_FLAG_SEND_FUA
NBD_FLAG_ROTATIONAL: Final = TransmissionFlag.NBD_FLAG_ROTATIONAL
NBD_FLAG_SEND_TRIM: Final = TransmissionFlag.NBD_FLAG_SEND_TRIM
NBD_FLAG_SEND_WRITE_ZEROES: Final = TransmissionFlag.NBD_FLAG_SEND_WRITE_ZEROES
NBD_FLAG_SEND_DF: Final = TransmissionFlag.NBD_FLAG_SEND_DF
NBD_FLAG_CAN_MULTI_CONN: Final = TransmissionFlag.NBD_FLAG_CAN_MULTI_CONN
NBD_FLAG_SEND_RESIZE: Final = TransmissionFlag.NBD_FLAG_SEND_RESIZE
NBD_FLAG_SEND_CACHE: Final = TransmissionFlag.NBD_FLAG_SEND_CACHE
NBD_FLAG_SEND_FAST_ZERO: Final = TransmissionFlag.NBD_FLAG_SEND_FAST_ZERO
NBD_FLAG_BLOCK_STAT_PAYLOAD: Final = TransmissionFlag.NBD_FLAG_BLOCK_STAT_PAYLOAD


# --------------------------------------------------------------------------- options


class Opt(IntEnum):
    """Option types a client sends during fixed newstyle negotiation."""

    NBD_OPT_EXPORT_NAME = 1
    NBD_OPT_ABORT = 2
    NBD_OPT_LIST = 3
    NBD_OPT_PEEK_EXPORT = 4  # withdrawn
    NBD_OPT_STARTTLS = 5
    NBD_OPT_INFO = 6
    NBD_OPT_GO = 7
    NBD_OPT_STRUCTURED_REPLY = 8
    NBD_OPT_LIST_META_CONTEXT = 9
    NBD_OPT_SET_META_CONTEXT = 10
    NBD_OPT_EXTENDED_HEADERS = 11


NBD_OPT_EXPORT_NAME: Final = Opt.NBD_OPT_EXPORT_NAME
NBD_OPT_ABORT: Final = Opt.NBD_OPT_ABORT
NBD_OPT_LIST: Final = Opt.NBD_OPT_LIST
NBD_OPT_PEEK_EXPORT: Final = Opt.NBD_OPT_PEEK_EXPORT
NBD_OPT_STARTTLS: Final = Opt.NBD_OPT_STARTTLS
NBD_OPT_INFO: Final = Opt.NBD_OPT_INFO
NBD_OPT_GO: Final = Opt.NBD_OPT_GO
NBD_OPT_STRUCTURED_REPLY: Final = Opt.NBD_OPT_STRUCTURED_REPLY
NBD_OPT_LIST_META_CONTEXT: Final = Opt.NBD_OPT_LIST_META_CONTEXT
NBD_OPT_SET_META_CONTEXT: Final = Opt.NBD_OPT_SET_META_CONTEXT
NBD_OPT_EXTENDED_HEADERS: Final = Opt.NBD_OPT_EXTENDED_HEADERS

NBD_REP_FLAG_ERROR: Final = 1 << 31  # set in every NBD_REP_ERR_* value


class Rep(IntEnum):
    """Option reply types; values with bit 31 set are errors."""

    NBD_REP_ACK = 1
    NBD_REP_SERVER = 2
    NBD_REP_INFO = 3
    NBD_REP_META_CONTEXT = 4
    NBD_REP_ERR_UNSUP = NBD_REP_FLAG_ERROR | 1
    NBD_REP_ERR_POLICY = NBD_REP_FLAG_ERROR | 2
    NBD_REP_ERR_INVALID = NBD_REP_FLAG_ERROR | 3
    NBD_REP_ERR_PLATFORM = NBD_REP_FLAG_ERROR | 4
    NBD_REP_ERR_TLS_REQD = NBD_REP_FLAG_ERROR | 5
    NBD_REP_ERR_UNKNOWN = NBD_REP_FLAG_ERROR | 6
    NBD_REP_ERR_SHUTDOWN = NBD_REP_FLAG_ERROR | 7
    NBD_REP_ERR_BLOCK_SIZE_REQD = NBD_REP_FLAG_ERROR | 8
    NBD_REP_ERR_TOO_BIG = NBD_REP_FLAG_ERROR | 9
    NBD_REP_ERR_EXT_HEADER_REQD = NBD_REP_FLAG_ERROR | 10


NBD_REP_ACK: Final = Rep.NBD_REP_ACK
NBD_REP_SERVER: Final = Rep.NBD_REP_SERVER
NBD_REP_INFO: Final = Rep.NBD_REP_INFO
NBD_REP_META_CONTEXT: Final = Rep.NBD_REP_META_CONTEXT
NBD_REP_ERR_UNSUP: Final = Rep.NBD_REP_ERR_UNSUP
NBD_REP_ERR_POLICY: Final = Rep.NBD_REP_ERR_POLICY
NBD_REP_ERR_INVALID: Final = Rep.NBD_REP_ERR_INVALID
NBD_REP_ERR_PLATFORM: Final = Rep.NBD_REP_ERR_PLATFORM
NBD_REP_ERR_TLS_REQD: Final = Rep.NBD_REP_ERR_TLS_REQD
NBD_REP_ERR_UNKNOWN: Final = Rep.NBD_REP_ERR_UNKNOWN
NBD_REP_ERR_SHUTDOWN: Final = Rep.NBD_REP_ERR_SHUTDOWN
NBD_REP_ERR_BLOCK_SIZE_REQD: Final = Rep.NBD_REP_ERR_BLOCK_SIZE_REQD
NBD_REP_ERR_TOO_BIG: Final = Rep.NBD_REP_ERR_TOO_BIG
NBD_REP_ERR_EXT_HEADER_REQD: Final = Rep.NBD_REP_ERR_EXT_HEADER_REQD


class Info(IntEnum):
    """Information types inside NBD_REP_INFO and requested by NBD_OPT_INFO/GO."""

    NBD_INFO_EXPORT = 0
    NBD_INFO_NAME = 1
    NBD_INFO_DESCRIPTION = 2
    NBD_INFO_BLOCK_SIZE = 3


NBD_INFO_EXPORT: Final = Info.NBD_INFO_EXPORT
NBD_INFO_NAME: Final = Info.NBD_INFO_NAME
NBD_INFO_DESCRIPTION: Final = Info.NBD_INFO_DESCRIPTION
NBD_INFO_BLOCK_SIZE: Final = Info.NBD_INFO_BLOCK_SIZE


# --------------------------------------------------------------------------- transmission


class Cmd(IntEnum):
    """Request types."""

    NBD_CMD_READ = 0
    NBD_CMD_WRITE = 1
    NBD_CMD_DISC = 2
    NBD_CMD_FLUSH = 3
    NBD_CMD_TRIM = 4
    NBD_CMD_CACHE = 5
    NBD_CMD_WRITE_ZEROES = 6
    NBD_CMD_BLOCK_STATUS = 7
    NBD_CMD_RESIZE = 8


NBD_CMD_READ: Final = Cmd.NBD_CMD_READ
NBD_CMD_WRITE: Final = Cmd.NBD_CMD_WRITE
NBD_CMD_DISC: Final = Cmd.NBD_CMD_DISC
NBD_CMD_FLUSH: Final = Cmd.NBD_CMD_FLUSH
NBD_CMD_TRIM: Final = Cmd.NBD_CMD_TRIM
NBD_CMD_CACHE: Final = Cmd.NBD_CMD_CACHE
NBD_CMD_WRITE_ZEROES: Final = Cmd.NBD_CMD_WRITE_ZEROES
NBD_CMD_BLOCK_STATUS: Final = Cmd.NBD_CMD_BLOCK_STATUS
NBD_CMD_RESIZE: Final = Cmd.NBD_CMD_RESIZE


class CmdFlag(IntFlag):
    """Command flags (16 bits) in a request."""

    NBD_CMD_FLAG_FUA = 1 << 0
    NBD_CMD_FLAG_NO_HOLE = 1 << 1
    NBD_CMD_FLAG_DF = 1 << 2
    NBD_CMD_FLAG_REQ_ONE = 1 << 3
    NBD_CMD_FLAG_FAST_ZERO = 1 << 4
    NBD_CMD_FLAG_PAYLOAD_LEN = 1 << 5


NBD_CMD_FLAG_FUA: Final = CmdFlag.NBD_CMD_FLAG_FUA
NBD_CMD_FLAG_NO_HOLE: Final = CmdFlag.NBD_CMD_FLAG_NO_HOLE
NBD_CMD_FLAG_DF: Final = CmdFlag.NBD_CMD_FLAG_DF
NBD_CMD_FLAG_REQ_ONE: Final = CmdFlag.NBD_CMD_FLAG_REQ_ONE
NBD_CMD_FLAG_FAST_ZERO: Final = CmdFlag.NBD_CMD_FLAG_FAST_ZERO
NBD_CMD_FLAG_PAYLOAD_LEN: Final = CmdFlag.NBD_CMD_FLAG_PAYLOAD_LEN

NBD_REPLY_FLAG_DONE: Final = 1 << 0  # structured reply chunk flag: last chunk of a reply


class ReplyType(IntEnum):
    """Structured reply chunk types; values with bit 15 set are errors."""

    NBD_REPLY_TYPE_NONE = 0
    NBD_REPLY_TYPE_OFFSET_DATA = 1
    NBD_REPLY_TYPE_OFFSET_HOLE = 2
    NBD_REPLY_TYPE_BLOCK_STATUS = 5
    NBD_REPLY_TYPE_BLOCK_STATUS_EXT = 6
    NBD_REPLY_TYPE_ERROR = (1 << 15) | 1
    NBD_REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2


NBD_REPLY_TYPE_NONE: Final = ReplyType.NBD_REPLY_TYPE_NONE
NBD_REPLY_TYPE_OFFSET_DATA: Final = ReplyType.NBD_REPLY_TYPE_OFFSET_DATA
NBD_REPLY_TYPE_OFFSET_HOLE: Final = ReplyType.NBD_REPLY_TYPE_OFFSET_HOLE
NBD_REPLY_TYPE_BLOCK_STATUS: Final = ReplyType.NBD_REPLY_TYPE_BLOCK_STATUS
NBD_REPLY_TYPE_BLOCK_STATUS_EXT: Final = ReplyType.NBD_REPLY_TYPE_BLOCK_STATUS_EXT
NBD_REPLY_TYPE_ERROR: Final = ReplyType.NBD_REPLY_TYPE_ERROR
NBD_REPLY_TYPE_ERROR_OFFSET: Final = ReplyType.NBD_REPLY_TYPE_ERROR_OFFSET
NBD_REPLY_TYPE_ERROR_BIT: Final = 1 << 15


def reply_type_is_error(reply_type: int) -> bool:
    """True for an error chunk type (bit 15 set), known or not."""
    return bool(reply_type & NBD_REPLY_TYPE_ERROR_BIT)


# Metadata context "base:allocation" extent flags.
NBD_STATE_HOLE: Final = 1 << 0
NBD_STATE_ZERO: Final = 1 << 1
# qemu's "qemu:dirty-bitmap:NAME" extent flag (docs/interop/nbd.txt).
NBD_STATE_DIRTY: Final = 1 << 0

BASE_ALLOCATION: Final = "base:allocation"


# --------------------------------------------------------------------------- errors


class Err(IntEnum):
    """Error values in simple replies and error chunks (Linux errno numbers)."""

    NBD_SUCCESS = 0
    NBD_EPERM = 1
    NBD_EIO = 5
    NBD_ENOMEM = 12
    NBD_EINVAL = 22
    NBD_ENOSPC = 28
    NBD_EOVERFLOW = 75
    NBD_ENOTSUP = 95
    NBD_ESHUTDOWN = 108


NBD_SUCCESS: Final = Err.NBD_SUCCESS
NBD_EPERM: Final = Err.NBD_EPERM
NBD_EIO: Final = Err.NBD_EIO
NBD_ENOMEM: Final = Err.NBD_ENOMEM
NBD_EINVAL: Final = Err.NBD_EINVAL
NBD_ENOSPC: Final = Err.NBD_ENOSPC
NBD_EOVERFLOW: Final = Err.NBD_EOVERFLOW
NBD_ENOTSUP: Final = Err.NBD_ENOTSUP
NBD_ESHUTDOWN: Final = Err.NBD_ESHUTDOWN

_NBD_TO_ERRNO: Final[dict[int, int]] = {
    NBD_EPERM: errno.EPERM,
    NBD_EIO: errno.EIO,
    NBD_ENOMEM: errno.ENOMEM,
    NBD_EINVAL: errno.EINVAL,
    NBD_ENOSPC: errno.ENOSPC,
    NBD_EOVERFLOW: errno.EOVERFLOW,
    NBD_ENOTSUP: errno.ENOTSUP,
    NBD_ESHUTDOWN: errno.ESHUTDOWN,
}
_ERRNO_TO_NBD: Final[dict[int, int]] = {v: k for k, v in _NBD_TO_ERRNO.items()}
_ERRNO_TO_NBD[errno.EOPNOTSUPP] = NBD_ENOTSUP  # same number on Linux, kept for clarity
_ERRNO_TO_NBD[errno.EROFS] = NBD_EPERM
_ERRNO_TO_NBD[errno.EFBIG] = NBD_ENOSPC
_ERRNO_TO_NBD[errno.EDQUOT] = NBD_ENOSPC


def nbd_error_to_errno(value: int) -> int:
    """The local errno for an NBD error value.

    proto.md: "The client SHOULD treat an unexpected error value as if it had been
    NBD_EINVAL", so unknown non-zero values map to EINVAL.
    """
    if value == 0:
        return 0
    return _NBD_TO_ERRNO.get(value, errno.EINVAL)


def errno_to_nbd_error(value: int) -> int:
    """The NBD error value to put on the wire for a local errno (EIO when unmapped)."""
    if value == 0:
        return 0
    return _ERRNO_TO_NBD.get(value, NBD_EIO)


def error_name(value: int) -> str:
    """``NBD_EIO`` style name of an NBD error value, or ``error N``."""
    try:
        return Err(value).name
    except ValueError:
        return f"error {value}"


# One message per NBD_REP_ERR_*, completed with the option name by the caller.
REP_ERR_MESSAGES: Final[dict[int, str]] = {
    NBD_REP_ERR_UNSUP: "the server does not support this option",
    NBD_REP_ERR_POLICY: "the server forbids this by policy (not allowed for this client)",
    NBD_REP_ERR_INVALID: "the server found the request invalid",
    NBD_REP_ERR_PLATFORM: "the server cannot do this on its platform",
    NBD_REP_ERR_TLS_REQD: "the server requires TLS; use nbds://",
    NBD_REP_ERR_UNKNOWN: "no such export on the server",
    NBD_REP_ERR_SHUTDOWN: "the server is shutting down",
    NBD_REP_ERR_BLOCK_SIZE_REQD: "the server requires the client to honour block sizes",
    NBD_REP_ERR_TOO_BIG: "the request or reply is too big for the server",
    NBD_REP_ERR_EXT_HEADER_REQD: "the server requires extended headers",
}


def rep_name(value: int) -> str:
    """``NBD_REP_ACK`` style name, or a hex number for an unknown reply type."""
    try:
        return Rep(value).name
    except ValueError:
        return f"reply {value:#x}"


def opt_name(value: int) -> str:
    """``NBD_OPT_GO`` style name, or a number for an unknown option."""
    try:
        return Opt(value).name
    except ValueError:
        return f"option {value}"


def cmd_name(value: int) -> str:
    """``NBD_CMD_READ`` style name, or a number for an unknown command."""
    try:
        return Cmd(value).name
    except ValueError:
        return f"command {value}"


# --------------------------------------------------------------------------- limits

NBD_MAX_STRING: Final = 4096  # proto.md: strings MUST be no longer than 4096 bytes
NBD_DEFAULT_MIN_BLOCK: Final = 1  # minimum block size when NBD_INFO_BLOCK_SIZE is absent
NBD_DEFAULT_PREFERRED_BLOCK: Final = 4096  # proto.md default preferred block size
NBD_DEFAULT_MAX_PAYLOAD: Final = 32 * 1024 * 1024  # largest payload without NBD_INFO_BLOCK_SIZE
NBD_MAX_MIN_BLOCK: Final = 64 * 1024  # proto.md: minimum block size at most 64 KiB
NBD_UNLIMITED_MAX_BLOCK: Final = 0xFFFFFFFF  # maximum block size value meaning "no limit"

# --------------------------------------------------------------------------- layouts

# Server greeting: NBDMAGIC u64, IHAVEOPT u64, handshake flags u16.
GREETING: Final = struct.Struct("!QQH")
# Client flags: u32.
CLIENT_FLAGS: Final = struct.Struct("!I")
# Option request header: IHAVEOPT u64, option u32, data length u32.
OPTION_HEADER: Final = struct.Struct("!QII")
# Option reply header: NBD_REP_MAGIC u64, option u32, reply type u32, length u32.
OPTION_REPLY_HEADER: Final = struct.Struct("!QIII")
# Reply to NBD_OPT_EXPORT_NAME: size u64, transmission flags u16 (then 124 zeroes unless NO_ZEROES).
EXPORT_NAME_REPLY: Final = struct.Struct("!QH")
EXPORT_NAME_ZEROES: Final = 124
# NBD_INFO_EXPORT payload: info type u16, size u64, transmission flags u16.
INFO_EXPORT: Final = struct.Struct("!HQH")
# NBD_INFO_BLOCK_SIZE payload: info type u16, minimum u32, preferred u32, maximum u32.
INFO_BLOCK_SIZE: Final = struct.Struct("!HIII")
# Info type prefix of every NBD_REP_INFO payload: u16.
INFO_TYPE: Final = struct.Struct("!H")
# Length prefix of strings inside option data and replies: u32.
U32: Final = struct.Struct("!I")
U16: Final = struct.Struct("!H")
# NBD_REP_META_CONTEXT payload head: context id u32 (then the name).
META_CONTEXT_ID: Final = U32

# Simple request: magic u32, command flags u16, type u16, cookie u64, offset u64, length u32.
REQUEST: Final = struct.Struct("!IHHQQI")
# Extended request: magic u32, command flags u16, type u16, cookie u64, offset u64, length u64.
EXTENDED_REQUEST: Final = struct.Struct("!IHHQQQ")
# Simple reply: magic u32, error u32, cookie u64.
SIMPLE_REPLY: Final = struct.Struct("!IIQ")
# Structured reply chunk header: magic u32, flags u16, type u16, cookie u64, length u32.
STRUCTURED_REPLY: Final = struct.Struct("!IHHQI")
# Extended reply chunk header: magic u32, flags u16, type u16, cookie u64, offset u64, length u64.
EXTENDED_REPLY: Final = struct.Struct("!IHHQQQ")
MAGIC32: Final = struct.Struct("!I")

# NBD_REPLY_TYPE_OFFSET_DATA / OFFSET_HOLE payload start: offset u64 (HOLE: then length u32).
OFFSET: Final = struct.Struct("!Q")
OFFSET_HOLE: Final = struct.Struct("!QI")
# NBD_REPLY_TYPE_OFFSET_HOLE with extended headers: offset u64, length u64.
OFFSET_HOLE_EXT: Final = struct.Struct("!QQ")
# NBD_REPLY_TYPE_BLOCK_STATUS: context id u32, then extents (length u32, flags u32).
BLOCK_STATUS_EXTENT: Final = struct.Struct("!II")
# NBD_REPLY_TYPE_BLOCK_STATUS_EXT: context id u32, count u32, then extents (length u64, flags u64).
BLOCK_STATUS_EXT_HEAD: Final = struct.Struct("!II")
BLOCK_STATUS_EXT_EXTENT: Final = struct.Struct("!QQ")
# The extents' words as array typecodes (unsigned, network byte order on the wire), for
# decoding a whole payload at once: u32 for BLOCK_STATUS, u64 for BLOCK_STATUS_EXT.
BLOCK_STATUS_WORD: Final = "I"
BLOCK_STATUS_EXT_WORD: Final = "Q"
# NBD_REPLY_TYPE_ERROR: error u32, message length u16, message (ERROR_OFFSET: then offset u64).
ERROR_HEAD: Final = struct.Struct("!IH")
