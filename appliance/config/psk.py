"""PSK files, the one module: generate keys, read and write the qemu-nbd/nbdkit format.

A psk file holds ``identity:hexkey`` lines (the format ``qemu-nbd --tls-creds
tls-creds-psk`` and ``nbdkit --tls-psk`` read); blank lines and ``#`` comments are
skipped.  Two readers share one line splitter and one file check (a regular file that
group and others cannot read): :func:`read_keys` takes every key as loosely as qemu-nbd
does (for a connection, :mod:`appliance.transport.tls`), :func:`read_psk_file` one key
checked as strictly as the settings store (for the console).  Every failure is a
:class:`~appliance.errors.PSKError`, and no message ever holds a key.

Keys come from :func:`secrets.token_bytes`, the kernel's CSPRNG -- the same source
``cryptography`` would use, so no extra dependency is needed for it.  Files are created
with mode 0600, written to a temporary name, fsynced and renamed, so a reader never sees
half a key.
"""

from __future__ import annotations

import getpass
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config.store import fsync_dir
from appliance.config.validate import (
    PSK_MAX_BYTES,
    PSK_MIN_BYTES,
    parse_hex_key,
    parse_identity,
)
from appliance.errors import PSKError

MAX_PSK_IDENTITY = 255  # what fits an NBD/TLS identity comfortably (qemu limits it too)

DEFAULT_KEY_BYTES = 32


@dataclass(frozen=True)
class PSKey:
    """One TLS pre-shared key; ``repr`` never shows the key bytes."""

    identity: str
    key: bytes = field(repr=False)


def psk_lines(text: str) -> Iterator[tuple[int, str, str | None]]:
    """``(line number, identity, hexkey)`` per key line of PSK-file text.

    Blank lines and ``#`` comments are skipped and whitespace around a line is
    dropped; ``hexkey`` is None for a line without ``:``.  Callers check the fields
    (:func:`read_keys` as loosely as qemu-nbd does, :func:`parse_psk_file` strictly).
    """
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        identity, sep, hexkey = line.partition(":")
        yield number, identity, hexkey if sep else None


def _read_private(path: str | Path, encoding: str) -> str:
    """The text of the key file ``path``, refused if group or others can read it."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise PSKError(f"cannot read PSK file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PSKError(f"PSK file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise PSKError(f"PSK file {path} is readable by group or others "
                       f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")
    try:
        with open(path, encoding=encoding) as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PSKError(f"cannot read PSK file {path}: {exc}") from None


def _loose_key(path: str, number: int, identity: str, hexkey: str | None) -> PSKey:
    if hexkey is None or not identity:
        raise PSKError(f"PSK file {path} line {number}: expected IDENTITY:HEXKEY")
    if len(identity.encode()) > MAX_PSK_IDENTITY:
        raise PSKError(f"PSK file {path} line {number}: identity too long")
    try:
        key = bytes.fromhex(hexkey.strip())
    except ValueError:
        raise PSKError(f"PSK file {path} line {number}: the key is not hexadecimal") from None
    if not key:
        raise PSKError(f"PSK file {path} line {number}: empty key")
    return PSKey(identity, key)


def read_keys(path: str) -> list[PSKey]:
    """All keys in the PSK file ``path``, checked as loosely as qemu-nbd does."""
    text = _read_private(path, "utf-8")
    keys = [_loose_key(path, *fields) for fields in psk_lines(text)]
    if not keys:
        raise PSKError(f"PSK file {path} holds no IDENTITY:HEXKEY line")
    return keys


def choose_psk(keys: list[PSKey], identity: str | None, path: str) -> PSKey:
    """The key for ``identity``; without one, the only key in the file, else the login name's
    key (libnbd's default identity is the login name)."""
    if identity is None:
        if len(keys) == 1:
            return keys[0]
        try:
            identity = getpass.getuser()
        except OSError:
            identity = ""
    for k in keys:
        if k.identity == identity:
            return k
    names = ", ".join(k.identity for k in keys)
    raise PSKError(f"PSK file {path} has no key for identity {identity!r} (it has: {names}); "
                   "put the identity in the URI as nbds://IDENTITY@HOST/")


def generate_key(nbytes: int = DEFAULT_KEY_BYTES) -> bytes:
    """A new random PSK of *nbytes* bytes (16-64)."""
    if not PSK_MIN_BYTES <= nbytes <= PSK_MAX_BYTES:
        raise PSKError(f"a psk key must be {PSK_MIN_BYTES}-{PSK_MAX_BYTES} bytes, "
                          f"not {nbytes}")
    import secrets  # here: importing it seeds random, which waits for the CRNG at boot

    return secrets.token_bytes(nbytes)


def format_psk_line(identity: str, key: bytes) -> str:
    """``identity:hexkey`` with a newline, checked."""
    try:
        parse_identity(identity)
        parse_hex_key(key.hex())
    except ValueError as exc:
        raise PSKError(str(exc)) from None
    return f"{identity}:{key.hex()}\n"


def parse_psk_file(text: str, identity: str | None = None) -> tuple[str, bytes]:
    """The (identity, key) of the first line (or the line for *identity*) of a psk file."""
    for number, name, hexkey in psk_lines(text):
        if hexkey is None:
            raise PSKError(f"psk file line {number}: expected identity:hexkey")
        if identity is not None and name != identity:
            continue
        try:
            return parse_identity(name), parse_hex_key(hexkey)
        except ValueError as exc:
            raise PSKError(f"psk file line {number}: {exc}") from None
    wanted = f" for identity '{identity}'" if identity else ""
    raise PSKError(f"psk file has no key{wanted}")


def read_psk_file(path: Path, identity: str | None = None) -> tuple[str, bytes]:
    """Read and parse a psk file strictly; a PSKError if it is missing, readable by group or
    others, or malformed."""
    text = _read_private(path, "ascii")
    try:
        return parse_psk_file(text, identity)
    except PSKError as exc:
        raise PSKError(f"{path}: {exc}") from None


def write_private_file(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write *data* to *path* with mode 0600, atomically (temp + fsync + rename + fsync dir)."""
    if path.exists() and not overwrite:
        raise PSKError(f"{path} exists (use --force to replace it)")
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
        raise PSKError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_psk_file(path: Path, identity: str, key: bytes, *, overwrite: bool = False) -> None:
    """Write a one-line psk file ``identity:hexkey`` with mode 0600 (atomically)."""
    write_private_file(path, format_psk_line(identity, key).encode("ascii"), overwrite=overwrite)
