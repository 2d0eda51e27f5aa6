"""THE settings table: every configuration key, its type, default, parser and help.

One declarative table (mkosi's idea) drives everything: parsing ``set KEY VALUE``,
``show``, ``help``, the stored text and the typed :class:`~appliance.config.model.BootConfig`
(whose field names are the keys with '.' and '-' turned into '_').  Adding a key is
adding one row here and one field there; a test checks the two agree.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.config import validate as v
from appliance.errors import ConfigError


@dataclass(frozen=True)
class Setting:
    """One configuration key."""

    key: str
    kind: str  # what the value looks like, for help
    default: str | None  # canonical text; None = unset unless the operator sets it
    parse: Callable[[str], Any]  # text -> typed value, ValueError with a one-line message
    help: str
    fmt: Callable[[Any], str] = str  # typed value -> canonical text
    secret: bool = False  # never shown or logged in full

    @property
    def attr(self) -> str:
        """The BootConfig field name of this key."""
        return self.key.replace(".", "_").replace("-", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting("nbd.uri", "NBD URI [URI...]", None, v.check_nbd_uris,
            "root disk server, as libnbd writes it: nbds://IDENTITY@HOST:PORT/EXPORT; "
            "several, space-separated: replicas of one read-only export (root.mode=overlay), "
            "tried in order"),
    Setting("nbd.path", "ktls|relay", "ktls", v.parse_nbd_path,
            "data path of the root disk: ktls (the kernel's nbd driver reads a kernel-TLS "
            "socket, a supervisor reconnects it; falls back to the relay, saying why, when "
            "the kernel cannot offload TLS, the URI is plaintext or nbd.uri lists replicas) "
            "or relay (the agent's relay in user space, which rides out server restarts "
            "itself and fails over between replicas)"),
    Setting("psk.identity", "name", "nbdroot", v.parse_identity,
            "TLS-PSK identity (the name before ':' in the server's psk file)"),
    Setting("psk.key", "hex", None, v.parse_hex_key,
            "TLS-PSK key, 32-128 hex digits (psk generate makes one)",
            fmt=v.format_hex_key, secret=True),
    Setting("net.interface", "ifname", "eth0", v.parse_ifname,
            "network interface that reaches the server"),
    Setting("net.mode", "dhcp|static", "dhcp", v.parse_net_mode,
            "how the interface gets its address"),
    Setting("net.address", "ADDR/PREFIX", None, v.parse_interface_address,
            "static address with prefix length, e.g. 192.168.1.20/24"),
    Setting("net.gateway", "ADDR", None, v.parse_address,
            "static default gateway (none: only the local subnet is reachable)"),
    Setting("net.dns", "ADDR[,ADDR...]", None, v.parse_address_list,
            "static DNS servers, comma-separated (at most 3)", fmt=v.format_address_list),
    Setting("board.phy", "0-31|auto", "auto", v.parse_phy,
            "MDIO address of the Ethernet PHY (auto: scan the bus)", fmt=v.format_auto),
    Setting("board.profile", "name|auto", "auto", v.parse_profile,
            "board profile to use instead of detecting it from the devicetree",
            fmt=v.format_auto),
    Setting("retry.deadline", "seconds|forever", "forever", v.parse_deadline,
            "how long to keep reconnecting to the server before giving up",
            fmt=v.format_forever),
    Setting("retry.backoff-initial", "seconds", "0.5", v.parse_seconds,
            "first wait between reconnect attempts (doubles each time)",
            fmt=v.format_number),
    Setting("retry.backoff-max", "seconds", "30", v.parse_seconds,
            "longest wait between reconnect attempts", fmt=v.format_number),
    Setting("console.countdown", "seconds", "3", v.parse_countdown,
            "how long the boot waits for a key press to open this prompt (0: never)"),
    Setting("root.mode", "rw|overlay", "rw", v.parse_root_mode,
            "rw: mount the export read-write; overlay: mount it read-only (a shared golden "
            "root) under an overlayfs whose writes stay in RAM"),
    Setting("root.overlay-size", "SIZE|N%", "50%", v.parse_tmpfs_size,
            "with root.mode=overlay: the RAM the root's writes may use (tmpfs size=)"),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}


def lookup(key: str) -> Setting:
    """The setting named *key*, or a ConfigError suggesting the closest key."""
    try:
        return BY_KEY[key]
    except KeyError:
        pass
    close = difflib.get_close_matches(key, list(BY_KEY), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else " (help lists the keys)"
    raise ConfigError(f"unknown key '{key}'{hint}")


def parse_value(setting: Setting, text: str) -> Any:
    """Parse *text* for *setting*; a ConfigError naming the key on bad input."""
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigError(f"{setting.key}: control characters are not allowed")
    text = text.strip()
    if not text:
        raise ConfigError(f"{setting.key}: needs a value (use unset to clear it)")
    try:
        return setting.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{setting.key}: {exc}") from None


def canonical(setting: Setting, text: str) -> str:
    """The canonical text of a valid value (what is stored and shown)."""
    return setting.fmt(parse_value(setting, text))


def mask_secret(text: str) -> str:
    """A secret for display: its first 4 characters and length: ``a1b2... (64 hex digits)``."""
    return f"{text[:4]}... ({len(text)} hex digits)"
