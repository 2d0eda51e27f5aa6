"""Value parsers for the settings table: text in, a typed value out, or ValueError.

Each parser takes the text an operator typed (``set KEY VALUE``) or the store held,
and returns the typed value; a matching formatter turns it back into canonical
text.  The ValueError message is one line a user can act on; the key name is added
by the caller.  Nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import re
import string

from appliance.errors import UsageError
from appliance.nbd.uri import NBDURI, parse_uri

FOREVER = "forever"
AUTO = "auto"

_IFNAME_MAX = 15  # IFNAMSIZ - 1
_IDENTITY_RE = re.compile(r"[A-Za-z0-9._@+=-]{1,128}")
_PROFILE_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
PSK_MIN_BYTES = 16
PSK_MAX_BYTES = 64


def parse_nbd_uri(text: str) -> NBDURI:
    """An NBD URI as libnbd writes them (``nbds://identity@host:port/export?...``).

    Parsed by :mod:`appliance.nbd.uri`; a Unix-socket URI is refused because the
    board reaches its server over the network.
    """
    if any(c in text for c in string.whitespace):
        raise ValueError("an NBD URI must not contain spaces")
    try:
        uri = parse_uri(text)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    if uri.is_unix:
        raise ValueError("a unix-socket URI cannot work on the board; use nbd:// or nbds://")
    return uri


def check_nbd_uri(text: str) -> str:
    """Validate an NBD URI and return it unchanged (the stored form is the text)."""
    parse_nbd_uri(text)
    return text


def parse_nbd_uris(text: str) -> tuple[NBDURI, ...]:
    """``nbd.uri``: one NBD URI, or several separated by spaces -- replicas of one
    read-only export, tried in order (see :func:`check_replicas`)."""
    uris = tuple(parse_nbd_uri(part) for part in text.split())
    if not uris:
        raise ValueError("needs an NBD URI")
    check_replicas(uris)
    return uris


def check_nbd_uris(text: str) -> str:
    """Validate ``nbd.uri`` (one URI or several replicas); canonical text: one space between."""
    parse_nbd_uris(text)
    return " ".join(text.split())


def check_replicas(uris: tuple[NBDURI, ...] | list[NBDURI]) -> None:
    """Several URIs must be replicas of one export: one scheme family for all (all TLS or
    all plaintext, all TCP or all Unix sockets), no server named twice.  ValueError naming
    the odd one out.  (That they serve the same bytes is checked when connecting.)"""
    first = uris[0]
    seen = {first.address}
    for uri in uris[1:]:
        if (uri.tls, uri.is_unix) != (first.tls, first.is_unix):
            raise ValueError(f"replicas must use one scheme: {uri} differs from {first}")
        if uri.address in seen:
            raise ValueError(f"server {uri.address} is named twice")
        seen.add(uri.address)


def parse_hex_key(text: str) -> bytes:
    """A PSK as hex digits (even count, 16-64 bytes)."""
    digits = text.strip().lower()
    if digits.startswith("0x"):
        digits = digits[2:]
    if not digits or any(c not in string.hexdigits for c in digits):
        raise ValueError("psk key must be hex digits 0-9a-f")
    if len(digits) % 2:
        raise ValueError(f"psk key must be an even number of hex digits (got {len(digits)})")
    key = bytes.fromhex(digits)
    if not PSK_MIN_BYTES <= len(key) <= PSK_MAX_BYTES:
        raise ValueError(f"psk key must be {PSK_MIN_BYTES}-{PSK_MAX_BYTES} bytes "
                         f"({2 * PSK_MIN_BYTES}-{2 * PSK_MAX_BYTES} hex digits), got {len(key)}")
    return key


def format_hex_key(key: object) -> str:
    """Canonical text of a PSK: lower-case hex."""
    assert isinstance(key, bytes)
    return key.hex()


def parse_identity(text: str) -> str:
    """A PSK identity: 1-128 characters of letters, digits and ``._@+=-`` (no ':')."""
    if not _IDENTITY_RE.fullmatch(text):
        raise ValueError("psk identity must be 1-128 letters, digits or ._@+=- "
                         "(no spaces, no ':')")
    return text


def parse_phy(text: str) -> int | None:
    """An MDIO PHY address 0-31, or ``auto`` (None: scan the bus)."""
    if text.lower() == AUTO:
        return None
    try:
        value = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= 31:
        raise ValueError("phy must be 0-31 or auto")
    return value


def format_auto(value: object) -> str:
    """``auto`` for None, else the value."""
    return AUTO if value is None else str(value)


_FOREVER_WORDS = (FOREVER, "inf", "infinite", "never")


def parse_deadline(text: str, *, allow_zero: bool = False) -> float | None:
    """Seconds to keep reconnecting (> 0; >= 0 with *allow_zero*), or ``forever`` (None).

    The one reconnect-deadline parser: the settings table uses it as is, the relay's
    ``--reconnect-deadline`` through :func:`appliance.relay.policy.parse_deadline`
    (where 0, "fail at once", is allowed).
    """
    if text.strip().lower() in _FOREVER_WORDS:
        return None
    message = f"reconnect deadline must be seconds {'>=' if allow_zero else '>'} 0 or forever"
    value = _number(text, message)
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(message)
    return value


def format_forever(value: object) -> str:
    """``forever`` for None, else the number."""
    return FOREVER if value is None else format_number(value)


def parse_seconds(text: str) -> float:
    """A non-negative number of seconds, at most a day."""
    value = _number(text, "must be a number of seconds")
    if not 0 <= value <= 86400:
        raise ValueError("must be 0-86400 seconds")
    return value


def format_number(value: object) -> str:
    """Integers without '.0'."""
    assert isinstance(value, int | float)
    return str(int(value)) if float(value).is_integer() else str(value)


def parse_countdown(text: str) -> int:
    """Whole seconds 0-60 of the boot-time "press any key" countdown."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 60:
        raise ValueError("must be whole seconds 0-60")
    return value


def _number(text: str, message: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(message) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(message)
    return value


def parse_net_mode(text: str) -> str:
    """``dhcp`` or ``static``."""
    if text.lower() not in ("dhcp", "static"):
        raise ValueError("must be dhcp or static")
    return text.lower()


def parse_interface_address(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """An address with its prefix length, e.g. ``192.168.1.20/24``."""
    if "/" not in text:
        raise ValueError("needs a prefix length, e.g. 192.168.1.20/24")
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise ValueError(f"'{text}' is not an address/prefix like 192.168.1.20/24") from None
    net = iface.network
    if iface.ip == net.network_address and net.prefixlen < iface.max_prefixlen - 1:
        raise ValueError(f"'{text}' is a network address, not a host address")
    return iface


def parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """One IP address."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"'{text}' is not an IP address") from None


def parse_address_list(text: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]:
    """Comma-separated IP addresses (DNS servers), at most 3 as resolv.conf allows."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("needs at least one address (unset the key for none)")
    if len(items) > 3:
        raise ValueError("at most 3 DNS servers")
    return tuple(parse_address(item) for item in items)


def format_address_list(value: object) -> str:
    """Comma-separated, no spaces."""
    assert isinstance(value, tuple)
    return ",".join(str(v) for v in value)


def parse_ifname(text: str) -> str:
    """A Linux network interface name: 1-15 characters, no '/', ':' or whitespace."""
    bad = set("/:") | set(string.whitespace)
    if not 0 < len(text) <= _IFNAME_MAX or any(c in bad for c in text) or text in (".", ".."):
        raise ValueError("interface name must be 1-15 characters without '/', ':' or spaces")
    return text


def parse_profile(text: str) -> str | None:
    """A board profile name (``auto`` = detect from the devicetree)."""
    if text.lower() == AUTO:
        return None
    if not _PROFILE_RE.fullmatch(text):
        raise ValueError("profile must be auto or a name of a-z, 0-9, '.', '_', '-'")
    return text




ROOT_MODES = ("rw", "overlay")
TMPFS_SIZE = re.compile(r"([1-9][0-9]{0,5}[kKmMgG]|[1-9][0-9]?%|100%)")


def parse_root_mode(text: str) -> str:
    """How the root is mounted: ``rw`` or ``overlay``."""
    if text not in ROOT_MODES:
        raise ValueError(f"must be one of {', '.join(ROOT_MODES)}")
    return text


NBD_PATHS = ("ktls", "relay")


def parse_nbd_path(text: str) -> str:
    """Which data path serves the root disk: ``relay`` or ``ktls``."""
    if text.lower() not in NBD_PATHS:
        raise ValueError(f"must be one of {', '.join(NBD_PATHS)}")
    return text.lower()


def parse_tmpfs_size(text: str) -> str:
    """A tmpfs ``size=``: a number with k/M/G, or 1-100 % of RAM."""
    if TMPFS_SIZE.fullmatch(text) is None:
        raise ValueError("must be a size with k, M or G (256M) or a share of RAM (50%)")
    return text
