"""DHCPv4 messages on the wire (RFC 2131 section 2, options RFC 2132): constants, encode, decode.

Only what a client keeping its lease needs: REQUEST and DISCOVER out, OFFER/ACK/NAK in.
Pure bytes in, bytes out (no sockets); :mod:`appliance.net.lease` decides what to send.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

SERVER_PORT = 67
CLIENT_PORT = 68

OP_BOOTREQUEST = 1
OP_BOOTREPLY = 2
HTYPE_ETHERNET = 1
FLAG_BROADCAST = 0x8000
MAGIC_COOKIE = 0x63825363

# Option 53 (DHCP message type) values.
DHCPDISCOVER = 1
DHCPOFFER = 2
DHCPREQUEST = 3
DHCPACK = 5
DHCPNAK = 6

OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MESSAGE_TYPE = 53
OPT_SERVER_ID = 54
OPT_PARAMETERS = 55
OPT_RENEWAL_TIME = 58  # T1
OPT_REBINDING_TIME = 59  # T2
OPT_CLIENT_ID = 61
OPT_END = 255

# op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr sname file magic
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128sI")
ZERO = ipaddress.IPv4Address(0)

IPv4 = ipaddress.IPv4Address


@dataclass(frozen=True)
class Message:
    """One DHCP message: the fixed header fields a client uses and its options."""

    op: int
    xid: int
    chaddr: bytes  # the 6-byte Ethernet address
    ciaddr: IPv4 = ZERO
    yiaddr: IPv4 = ZERO
    flags: int = 0
    options: dict[int, bytes] = field(default_factory=dict)

    @property
    def type(self) -> int | None:
        """Option 53, or None."""
        value = self.options.get(OPT_MESSAGE_TYPE)
        return value[0] if value and len(value) == 1 else None

    def address_option(self, code: int) -> IPv4 | None:
        """An option holding one IPv4 address (the first of several), or None."""
        value = self.options.get(code, b"")
        return IPv4(value[:4]) if len(value) >= 4 else None

    def seconds_option(self, code: int) -> int | None:
        """A 32-bit time option (lease, T1, T2), or None."""
        value = self.options.get(code, b"")
        return int.from_bytes(value, "big") if len(value) == 4 else None


def encode(msg: Message) -> bytes:
    """The message's bytes: header, magic cookie, options, END."""
    header = HEADER.pack(msg.op, HTYPE_ETHERNET, len(msg.chaddr), 0, msg.xid, 0, msg.flags,
                         msg.ciaddr.packed, msg.yiaddr.packed, ZERO.packed, ZERO.packed,
                         msg.chaddr.ljust(16, b"\0"), b"", b"", MAGIC_COOKIE)
    opts = b"".join(bytes([code, len(value)]) + value for code, value in msg.options.items())
    return header + opts + bytes([OPT_END])


def decode(data: bytes) -> Message | None:
    """The message in ``data``, or None if it is not a well-formed DHCP message."""
    if len(data) < HEADER.size:
        return None
    (op, htype, hlen, _hops, xid, _secs, flags, ciaddr, yiaddr, _siaddr, _giaddr, chaddr,
     _sname, _file, magic) = HEADER.unpack_from(data)
    if magic != MAGIC_COOKIE or htype != HTYPE_ETHERNET or hlen != 6:
        return None
    options = _options(data[HEADER.size:])
    if options is None:
        return None
    return Message(op=op, xid=xid, chaddr=chaddr[:6], ciaddr=IPv4(ciaddr), yiaddr=IPv4(yiaddr),
                   flags=flags, options=options)


def _options(data: bytes) -> dict[int, bytes] | None:
    """Options up to END (the first occurrence of each code wins); None if truncated."""
    found: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            return found
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(data) or i + 2 + data[i + 1] > len(data):
            return None
        found.setdefault(code, data[i + 2:i + 2 + data[i + 1]])
        i += 2 + data[i + 1]
    return found
