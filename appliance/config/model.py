"""The configuration value: what the operator set, and the typed view the boot uses.

:class:`Config` is immutable and holds the canonical text of each key the operator
set explicitly (unset keys take the table's default); it serialises to ``key=value``
lines for the store.  :class:`BootConfig` is the typed view, built from the settings
table, with the cross-key checks a bootable configuration must pass.  Secrets never
appear in ``repr`` or ``show`` in full.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from appliance.config.settings import (
    BY_KEY,
    SETTINGS,
    canonical,
    lookup,
    mask_secret,
    parse_value,
)
from appliance.config.validate import parse_nbd_uris
from appliance.errors import ConfigError
from appliance.nbd.uri import NBDURI

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class Config:
    """The keys the operator set, as canonical text (immutable; ``set`` returns a new one)."""

    values: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key, text in self.values.items():
            setting = lookup(key)
            if canonical(setting, text) != text:
                shown = mask_secret(text) if setting.secret else text
                raise ConfigError(f"{key}: '{shown}' is not in canonical form")

    def __repr__(self) -> str:
        shown = {k: self.display(k) for k in sorted(self.values)}
        return f"Config({shown})"

    def set(self, key: str, text: str) -> Config:
        """A copy with *key* set to *text* (validated, canonicalised)."""
        setting = lookup(key)
        return Config({**self.values, key: canonical(setting, text)})

    def unset(self, key: str) -> Config:
        """A copy with *key* back at its default."""
        lookup(key)
        return Config({k: val for k, val in self.values.items() if k != key})

    def raw(self, key: str) -> str | None:
        """The canonical text of *key*: the set value, else the default (None = unset)."""
        setting = lookup(key)
        return self.values.get(key, setting.default)

    def display(self, key: str) -> str:
        """The value of *key* as ``show`` prints it (secrets masked)."""
        text = self.raw(key)
        if text is None:
            return "(unset)"
        return mask_secret(text) if BY_KEY[key].secret else text

    def show_lines(self) -> Iterator[str]:
        """One ``key = value`` line per setting, in table order; defaults marked."""
        width = max(len(s.key) for s in SETTINGS)
        for s in SETTINGS:
            mark = "" if s.key in self.values or s.default is None else "  (default)"
            yield f"{s.key:<{width}} = {self.display(s.key)}{mark}"

    def to_text(self) -> str:
        """The stored form: ``key=value`` lines, sorted, for the keys set."""
        return "".join(f"{k}={self.values[k]}\n" for k in sorted(self.values))

    @classmethod
    def from_text(cls, text: str) -> Config:
        """Parse the stored form; a ConfigError names the bad line."""
        values: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise ConfigError(f"line {number}: expected key=value")
            key = key.strip()
            try:
                values[key] = canonical(lookup(key), value)
            except ConfigError as exc:
                raise ConfigError(f"line {number}: {exc}") from None
        return cls(values)

    def boot_config(self) -> BootConfig:
        """The typed view; a ConfigError if the settings do not make a bootable config."""
        return BootConfig.from_config(self)


@dataclass(frozen=True)
class BootConfig:
    """Typed settings for the boot; field names are the keys with '.'/'-' as '_'."""

    nbd_uri: str | None
    nbd_path: str
    psk_identity: str
    psk_key: bytes | None = field(repr=False)
    net_interface: str
    net_mode: str
    net_address: IPInterface | None
    net_gateway: IPAddress | None
    net_dns: tuple[IPAddress, ...] | None
    board_phy: int | None  # None = scan the MDIO bus
    board_profile: str | None  # None = detect
    retry_deadline: float | None  # None = forever
    retry_backoff_initial: float
    retry_backoff_max: float
    console_countdown: int
    root_mode: str
    root_overlay_size: str

    @classmethod
    def typed(cls, config: Config) -> BootConfig:
        """The typed values of *config*, without the cross-key checks."""
        kwargs: dict[str, Any] = {}
        for s in SETTINGS:
            text = config.raw(s.key)
            kwargs[s.attr] = None if text is None else parse_value(s, text)
        return cls(**kwargs)

    @classmethod
    def from_config(cls, config: Config) -> BootConfig:
        """The typed values of *config*, checked to make a bootable configuration."""
        typed = cls.typed(config)
        problems = typed.problems()
        if problems:
            raise ConfigError("; ".join(problems))
        return typed

    @property
    def uri(self) -> NBDURI:
        """The parsed NBD URI, the first replica's if several (only valid on a checked
        config)."""
        return self.uris[0]

    @property
    def uris(self) -> tuple[NBDURI, ...]:
        """Every URI of nbd.uri, in order (several: replicas of a read-only export)."""
        if self.nbd_uri is None:
            raise ConfigError("nbd.uri is not set")
        return parse_nbd_uris(self.nbd_uri)

    def problems(self) -> list[str]:
        """What stops this configuration from booting, one message per problem."""
        out: list[str] = []
        if self.nbd_uri is None:
            out.append("nbd.uri is not set (example: set nbd.uri nbds://board1@10.0.2.2/root)")
        else:
            out.extend(self._uri_problems(self.uris))
        if self.net_mode == "static":
            out.extend(self._static_problems())
        if self.retry_backoff_max < self.retry_backoff_initial:
            out.append("retry.backoff-max is smaller than retry.backoff-initial")
        return out

    def _uri_problems(self, uris: tuple[NBDURI, ...]) -> list[str]:
        out: list[str] = []
        if uris[0].tls and self.psk_key is None:
            out.append("psk.key is not set but nbd.uri uses TLS (run psk generate "
                       "or set psk.key)")
        for user in dict.fromkeys(u.tls_username for u in uris):
            if user is not None and user != self.psk_identity:
                out.append(f"psk.identity '{self.psk_identity}' differs from the user "
                           f"'{user}' in nbd.uri")
        if len(uris) > 1 and self.root_mode != "overlay":
            # A write to one replica would not reach the others: failover is for a
            # read-only root only.
            out.append(f"nbd.uri lists {len(uris)} replicas, which needs root.mode=overlay "
                       "(a read-only export); set root.mode overlay or give one URI")
        return out

    def _static_problems(self) -> list[str]:
        out: list[str] = []
        if self.net_address is None:
            out.append("net.mode is static but net.address is not set")
        elif self.net_gateway is not None and self.net_gateway not in self.net_address.network:
            out.append(f"net.gateway {self.net_gateway} is outside {self.net_address.network}")
        return out

    def psk_file_text(self) -> str:
        """The key as a qemu-nbd/nbdkit psk file line ``identity:hexkey``."""
        if self.psk_key is None:
            raise ConfigError("psk.key is not set")
        return f"{self.psk_identity}:{self.psk_key.hex()}\n"

