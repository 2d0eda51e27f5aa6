"""proto.py against the numbers of proto.md, typed in again here by hand."""

from __future__ import annotations

import errno

import pytest

from appliance.nbd import proto

# (name, value) exactly as proto.md lists them.
SPEC_VALUES = [
    ("NBD_REQUEST_MAGIC", 0x25609513),
    ("NBD_EXTENDED_REQUEST_MAGIC", 0x21E41C71),
    ("NBD_SIMPLE_REPLY_MAGIC", 0x67446698),
    ("NBD_STRUCTURED_REPLY_MAGIC", 0x668E33EF),
    ("NBD_EXTENDED_REPLY_MAGIC", 0x6E8A278C),
    ("NBD_REP_MAGIC", 0x3E889045565A9),
    ("IHAVEOPT", int.from_bytes(b"IHAVEOPT", "big")),
    ("NBDMAGIC", int.from_bytes(b"NBDMAGIC", "big")),
    ("NBD_FLAG_FIXED_NEWSTYLE", 1),
    ("NBD_FLAG_NO_ZEROES", 2),
    ("NBD_FLAG_C_FIXED_NEWSTYLE", 1),
    ("NBD_FLAG_C_NO_ZEROES", 2),
    ("NBD_FLAG_HAS_FLAGS", 1 << 0),
    ("NBD_FLAG_READ_ONLY", 1 << 1),
    ("NBD_FLAG_SEND_FLUSH", 1 << 2),
    ("NBD_FLAG_SEND_FUA", 1 << 3),
    ("NBD_FLAG_ROTATIONAL", 1 << 4),
    ("NBD_FLAG_SEND_TRIM", 1 << 5),
    ("NBD_FLAG_SEND_WRITE_ZEROES", 1 << 6),
    ("NBD_FLAG_SEND_DF", 1 << 7),
    ("NBD_FLAG_CAN_MULTI_CONN", 1 << 8),
    ("NBD_FLAG_SEND_RESIZE", 1 << 9),
    ("NBD_FLAG_SEND_CACHE", 1 << 10),
    ("NBD_FLAG_SEND_FAST_ZERO", 1 << 11),
    ("NBD_FLAG_BLOCK_STAT_PAYLOAD", 1 << 12),
    ("NBD_OPT_EXPORT_NAME", 1),
    ("NBD_OPT_ABORT", 2),
    ("NBD_OPT_LIST", 3),
    ("NBD_OPT_PEEK_EXPORT", 4),
    ("NBD_OPT_STARTTLS", 5),
    ("NBD_OPT_INFO", 6),
    ("NBD_OPT_GO", 7),
    ("NBD_OPT_STRUCTURED_REPLY", 8),
    ("NBD_OPT_LIST_META_CONTEXT", 9),
    ("NBD_OPT_SET_META_CONTEXT", 10),
    ("NBD_OPT_EXTENDED_HEADERS", 11),
    ("NBD_REP_ACK", 1),
    ("NBD_REP_SERVER", 2),
    ("NBD_REP_INFO", 3),
    ("NBD_REP_META_CONTEXT", 4),
    ("NBD_REP_ERR_UNSUP", 2**31 + 1),
    ("NBD_REP_ERR_POLICY", 2**31 + 2),
    ("NBD_REP_ERR_INVALID", 2**31 + 3),
    ("NBD_REP_ERR_PLATFORM", 2**31 + 4),
    ("NBD_REP_ERR_TLS_REQD", 2**31 + 5),
    ("NBD_REP_ERR_UNKNOWN", 2**31 + 6),
    ("NBD_REP_ERR_SHUTDOWN", 2**31 + 7),
    ("NBD_REP_ERR_BLOCK_SIZE_REQD", 2**31 + 8),
    ("NBD_REP_ERR_TOO_BIG", 2**31 + 9),
    ("NBD_REP_ERR_EXT_HEADER_REQD", 2**31 + 10),
    ("NBD_INFO_EXPORT", 0),
    ("NBD_INFO_NAME", 1),
    ("NBD_INFO_DESCRIPTION", 2),
    ("NBD_INFO_BLOCK_SIZE", 3),
    ("NBD_CMD_READ", 0),
    ("NBD_CMD_WRITE", 1),
    ("NBD_CMD_DISC", 2),
    ("NBD_CMD_FLUSH", 3),
    ("NBD_CMD_TRIM", 4),
    ("NBD_CMD_CACHE", 5),
    ("NBD_CMD_WRITE_ZEROES", 6),
    ("NBD_CMD_BLOCK_STATUS", 7),
    ("NBD_CMD_RESIZE", 8),
    ("NBD_CMD_FLAG_FUA", 1 << 0),
    ("NBD_CMD_FLAG_NO_HOLE", 1 << 1),
    ("NBD_CMD_FLAG_DF", 1 << 2),
    ("NBD_CMD_FLAG_REQ_ONE", 1 << 3),
    ("NBD_CMD_FLAG_FAST_ZERO", 1 << 4),
    ("NBD_CMD_FLAG_PAYLOAD_LEN", 1 << 5),
    ("NBD_REPLY_FLAG_DONE", 1 << 0),
    ("NBD_REPLY_TYPE_NONE", 0),
    ("NBD_REPLY_TYPE_OFFSET_DATA", 1),
    ("NBD_REPLY_TYPE_OFFSET_HOLE", 2),
    ("NBD_REPLY_TYPE_BLOCK_STATUS", 5),
    ("NBD_REPLY_TYPE_BLOCK_STATUS_EXT", 6),
    ("NBD_REPLY_TYPE_ERROR", 2**15 + 1),
    ("NBD_REPLY_TYPE_ERROR_OFFSET", 2**15 + 2),
    ("NBD_STATE_HOLE", 1),
    ("NBD_STATE_ZERO", 2),
    ("NBD_EPERM", 1),
    ("NBD_EIO", 5),
    ("NBD_ENOMEM", 12),
    ("NBD_EINVAL", 22),
    ("NBD_ENOSPC", 28),
    ("NBD_EOVERFLOW", 75),
    ("NBD_ENOTSUP", 95),
    ("NBD_ESHUTDOWN", 108),
]


@pytest.mark.parametrize(("name", "value"), SPEC_VALUES)
def test_constant_matches_proto_md(name: str, value: int) -> None:
    assert getattr(proto, name) == value


def test_enum_members_carry_spec_names() -> None:
    assert proto.Opt(7).name == "NBD_OPT_GO"
    assert proto.Rep(2**31 + 5).name == "NBD_REP_ERR_TLS_REQD"
    assert proto.ReplyType(6).name == "NBD_REPLY_TYPE_BLOCK_STATUS_EXT"
    assert proto.opt_name(99) == "option 99"
    assert proto.rep_name(2**31 + 77) == "reply 0x8000004d"
    assert proto.cmd_name(0) == "NBD_CMD_READ"


@pytest.mark.parametrize("member", list(proto.Rep))
def test_every_rep_err_has_a_message(member: proto.Rep) -> None:
    if member & proto.NBD_REP_FLAG_ERROR:
        assert proto.REP_ERR_MESSAGES[member]
    else:
        assert member not in proto.REP_ERR_MESSAGES


@pytest.mark.parametrize(("nbd", "local"), [
    (1, errno.EPERM), (5, errno.EIO), (12, errno.ENOMEM), (22, errno.EINVAL),
    (28, errno.ENOSPC), (75, errno.EOVERFLOW), (95, errno.ENOTSUP), (108, errno.ESHUTDOWN),
])
def test_error_mapping_round_trips(nbd: int, local: int) -> None:
    assert proto.nbd_error_to_errno(nbd) == local
    assert proto.errno_to_nbd_error(local) == nbd


def test_unknown_errors() -> None:
    # proto.md: treat an unexpected error value as NBD_EINVAL
    assert proto.nbd_error_to_errno(4242) == errno.EINVAL
    assert proto.nbd_error_to_errno(0) == 0
    # servers SHOULD map EDQUOT and EFBIG to NBD_ENOSPC
    assert proto.errno_to_nbd_error(errno.EDQUOT) == proto.NBD_ENOSPC
    assert proto.errno_to_nbd_error(errno.EFBIG) == proto.NBD_ENOSPC
    assert proto.errno_to_nbd_error(errno.ENOENT) == proto.NBD_EIO
    assert proto.error_name(75) == "NBD_EOVERFLOW"


@pytest.mark.parametrize(("layout", "size"), [
    (proto.GREETING, 18), (proto.OPTION_HEADER, 16), (proto.OPTION_REPLY_HEADER, 20),
    (proto.REQUEST, 28), (proto.EXTENDED_REQUEST, 32), (proto.SIMPLE_REPLY, 16),
    (proto.STRUCTURED_REPLY, 20), (proto.EXTENDED_REPLY, 32), (proto.INFO_EXPORT, 12),
    (proto.INFO_BLOCK_SIZE, 14), (proto.OFFSET_HOLE, 12), (proto.ERROR_HEAD, 6),
])
def test_layout_sizes(layout: object, size: int) -> None:
    assert layout.size == size  # type: ignore[attr-defined]
