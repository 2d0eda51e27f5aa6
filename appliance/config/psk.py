"""TLS-PSK keys: generate them, and read/write the qemu-nbd/nbdkit psk file format.

A psk file holds ``identity:hexkey`` lines (the format ``qemu-nbd --tls-creds
tls-creds-psk`` and ``nbdkit --tls-psk`` read).  Keys come from :func:`secrets.token_bytes`,
the kernel's CSPRNG -- the same source ``cryptography`` would use, so no extra
dependency is needed for it.  Files are created with mode 0600, written to a temporary
name, fsynced and renamed, so a reader never sees half a key.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from appliance.config.store import fsync_dir
from appliance.config.validate import (
    PSK_MAX_BYTES,
    PSK_MIN_BYTES,
    parse_hex_key,
    parse_identity,
)
from appliance.errors import ConfigError
from appliance.transport.tls import psk_lines

DEFAULT_KEY_BYTES = 32


def generate_key(nbytes: int = DEFAULT_KEY_BYTES) -> bytes:
    """A new random PSK of *nbytes* bytes (16-64)."""
    if not PSK_MIN_BYTES <= nbytes <= PSK_MAX_BYTES:
        raise ConfigError(f"a psk key must be {PSK_MIN_BYTES}-{PSK_MAX_BYTES} bytes, "
                          f"not {nbytes}")
    return secrets.token_bytes(nbytes)


def format_psk_line(identity: str, key: bytes) -> str:
    """``identity:hexkey`` with a newline, checked."""
    try:
        parse_identity(identity)
        parse_hex_key(key.hex())
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return f"{identity}:{key.hex()}\n"


def parse_psk_file(text: str, identity: str | None = None) -> tuple[str, bytes]:
    """The (identity, key) of the first line (or the line for *identity*) of a psk file."""
    for number, name, hexkey in psk_lines(text):
        if hexkey is None:
            raise ConfigError(f"psk file line {number}: expected identity:hexkey")
        if identity is not None and name != identity:
            continue
        try:
            return parse_identity(name), parse_hex_key(hexkey)
        except ValueError as exc:
            raise ConfigError(f"psk file line {number}: {exc}") from None
    wanted = f" for identity '{identity}'" if identity else ""
    raise ConfigError(f"psk file has no key{wanted}")


def read_psk_file(path: Path, identity: str | None = None) -> tuple[str, bytes]:
    """Read and parse a psk file; a ConfigError if it is missing or malformed."""
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read psk file {path}: {exc}") from None
    try:
        return parse_psk_file(text, identity)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write *data* to *path* with mode 0600, atomically (temp + fsync + rename + fsync dir)."""
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists (use --force to replace it)")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_psk_file(path: Path, identity: str, key: bytes, *, overwrite: bool = False) -> None:
    """Write a one-line psk file ``identity:hexkey`` with mode 0600."""
    write_private_file(path, format_psk_line(identity, key).encode("ascii"), overwrite=overwrite)
