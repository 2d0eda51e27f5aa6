"""The nbd netlink messages we build, checked byte by byte against nbd-netlink.h.

No kernel is involved: these check our encoding (attribute numbers, types, nesting) so a
mistake shows up here and not as EINVAL on the board.
"""

from __future__ import annotations

import struct

from appliance.kernel.attach import KernelExport, block_size_for
from appliance.kernel.netlink import (
    NBD_CMD_CONNECT,
    NBD_CMD_DISCONNECT,
    ConnectRequest,
    build_connect,
    build_index_command,
    nbdmsg,
    parse_status,
)
from appliance.nbd import proto

NLA_F_NESTED = 1 << 15
NLMSG_HDR = 16
GENL_HDR = 4


def attrs(buf: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) of each netlink attribute in ``buf`` (alignment 4)."""
    out = []
    pos = 0
    while pos + 4 <= len(buf):
        length, typ = struct.unpack_from("=HH", buf, pos)
        out.append((typ, buf[pos + 4:pos + length]))
        pos += (length + 3) & ~3
    return out


def encode(msg: nbdmsg) -> bytes:
    msg["header"]["type"] = 0x1234
    msg.encode()
    return bytes(msg.data)


def test_connect_attributes_numbers_and_types() -> None:
    req = ConnectRequest(fds=(5, 9), size_bytes=3 << 30, block_size=4096, server_flags=0x2D,
                         index=2, timeout=0, dead_conn_timeout=30)
    data = encode(build_connect(req))
    cmd, version = data[NLMSG_HDR], data[NLMSG_HDR + 1]
    assert (cmd, version) == (NBD_CMD_CONNECT, 1)
    top = dict(attrs(data[NLMSG_HDR + GENL_HDR:]))
    assert struct.unpack("=I", top[1]) == (2,)                      # NBD_ATTR_INDEX u32
    assert struct.unpack("=Q", top[2]) == (3 << 30,)                # SIZE_BYTES u64
    assert struct.unpack("=Q", top[3]) == (4096,)                   # BLOCK_SIZE_BYTES u64
    assert struct.unpack("=Q", top[4]) == (0,)                      # TIMEOUT u64
    assert struct.unpack("=Q", top[5]) == (0x2D,)                   # SERVER_FLAGS u64
    assert struct.unpack("=Q", top[8]) == (30,)                     # DEAD_CONN_TIMEOUT u64
    socks = top[7 | NLA_F_NESTED]                                   # NBD_ATTR_SOCKETS nested
    items = attrs(socks)
    assert [t & ~NLA_F_NESTED for t, _ in items] == [1, 1]          # NBD_SOCK_ITEM
    fds = [struct.unpack("=I", dict(attrs(p))[1])[0] for _, p in items]  # NBD_SOCK_FD
    assert fds == [5, 9]


def test_connect_without_index_lets_the_kernel_choose() -> None:
    data = encode(build_connect(ConnectRequest(fds=(3,), size_bytes=1 << 20, block_size=512,
                                               server_flags=1)))
    types = {t & ~NLA_F_NESTED for t, _ in attrs(data[NLMSG_HDR + GENL_HDR:])}
    assert 1 not in types and {2, 3, 5, 7} <= types


def test_disconnect_names_the_device() -> None:
    data = encode(build_index_command(NBD_CMD_DISCONNECT, 4))
    assert data[NLMSG_HDR] == NBD_CMD_DISCONNECT
    assert attrs(data[NLMSG_HDR + GENL_HDR:]) == [(1, struct.pack("=I", 4))]


def test_status_reply_parsing() -> None:
    # A reply shaped as nbd_genl_status builds it: DEVICE_LIST > DEVICE_ITEM > INDEX, CONNECTED
    msg = nbdmsg()
    msg["cmd"] = 5
    msg["attrs"].append(["NBD_ATTR_DEVICE_LIST", {"attrs": [
        ["NBD_DEVICE_ITEM", {"attrs": [["NBD_DEVICE_INDEX", 0], ["NBD_DEVICE_CONNECTED", 1]]}],
        ["NBD_DEVICE_ITEM", {"attrs": [["NBD_DEVICE_INDEX", 3], ["NBD_DEVICE_CONNECTED", 0]]}],
    ]}])
    decoded = nbdmsg(encode(msg))
    decoded.decode()
    assert parse_status(decoded) == {0: True, 3: False}


def test_kernel_flags_drop_what_the_kernel_must_not_see() -> None:
    server = (proto.NBD_FLAG_HAS_FLAGS | proto.NBD_FLAG_SEND_FLUSH | proto.NBD_FLAG_SEND_FUA
              | proto.NBD_FLAG_CAN_MULTI_CONN | proto.NBD_FLAG_SEND_DF
              | proto.NBD_FLAG_SEND_CACHE | proto.NBD_FLAG_SEND_TRIM)
    got = KernelExport(size=1, flags=server).kernel_flags()
    assert got == (proto.NBD_FLAG_HAS_FLAGS | proto.NBD_FLAG_SEND_FLUSH
                   | proto.NBD_FLAG_SEND_FUA | proto.NBD_FLAG_SEND_TRIM)


def test_block_size_is_a_power_of_two_in_kernel_range() -> None:
    assert block_size_for(None) == 512
    assert block_size_for(4096) == 4096
    assert block_size_for(65536) == 4096
    assert block_size_for(3000) == 2048
    assert block_size_for(None, minimum=1) == 512
    assert block_size_for(512, minimum=4096) == 4096
