"""TLS for NBD clients: PSK key files, SSL contexts and the STARTTLS handshake.

Owns:

* the PSK file format of qemu-nbd / nbdkit (``identity:hexkey`` lines): the one line
  splitter (:func:`psk_lines`, also used by :mod:`appliance.config.psk`) and reading a
  file for a connection, refusing one that group or others can read, never logging the key;
* building the client :class:`ssl.SSLContext` for TLS-PSK (TLS 1.3 and 1.2 PSK suites,
  which GnuTLS servers accept) or X.509 (a directory laid out like QEMU's tls-creds-x509:
  ``ca-cert.pem``, ``client-cert.pem``, ``client-key.pem``);
* wrapping the socket after NBD_OPT_STARTTLS and turning handshake failures into a
  one-line :class:`TransportError`.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import ssl
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from appliance.errors import TransportError, UsageError
from appliance.nbd.uri import NBDURI

log = logging.getLogger(__name__)

# OpenSSL names for TLS 1.2 PSK suites; TLS 1.3 suites work with PSK without listing.
PSK_CIPHERS = "ECDHE-PSK:DHE-PSK:PSK:!aNULL:!eNULL:!MD5:!RC4:!3DES"
MAX_PSK_IDENTITY = 255  # what fits an NBD/TLS identity comfortably (qemu limits it too)


@dataclass(frozen=True)
class PSKey:
    """One TLS pre-shared key; ``repr`` never shows the key bytes."""

    identity: str
    key: bytes = field(repr=False)


def _check_private(path: str) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"cannot read PSK file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"PSK file {path} is not a regular file")
    if st.st_mode & 0o077:
        raise UsageError(f"PSK file {path} is readable by group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}")


def psk_lines(text: str) -> Iterator[tuple[int, str, str | None]]:
    """``(line number, identity, hexkey)`` per key line of PSK-file text.

    Blank lines and ``#`` comments are skipped and whitespace around a line is
    dropped; ``hexkey`` is None for a line without ``:``.  Callers check the fields
    (this module as loosely as qemu-nbd does, the settings store strictly).
    """
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        identity, sep, hexkey = line.partition(":")
        yield number, identity, hexkey if sep else None


def _parse_psk_line(path: str, number: int, identity: str, hexkey: str | None) -> PSKey:
    if hexkey is None or not identity:
        raise UsageError(f"PSK file {path} line {number}: expected IDENTITY:HEXKEY")
    if len(identity.encode()) > MAX_PSK_IDENTITY:
        raise UsageError(f"PSK file {path} line {number}: identity too long")
    try:
        key = bytes.fromhex(hexkey.strip())
    except ValueError:
        raise UsageError(f"PSK file {path} line {number}: the key is not hexadecimal") from None
    if not key:
        raise UsageError(f"PSK file {path} line {number}: empty key")
    return PSKey(identity, key)


def read_psk_file(path: str) -> list[PSKey]:
    """All keys in a PSK file (``identity:hexkey`` per line, ``#`` comments and blanks ignored)."""
    _check_private(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read PSK file {path}: {exc}") from None
    keys = [_parse_psk_line(path, *fields) for fields in psk_lines(text)]
    if not keys:
        raise UsageError(f"PSK file {path} holds no IDENTITY:HEXKEY line")
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
    raise UsageError(f"PSK file {path} has no key for identity {identity!r} (it has: {names}); "
                     "put the identity in the URI as nbds://IDENTITY@HOST/")


def psk_context(key: PSKey) -> ssl.SSLContext:
    """A client context that authenticates with ``key`` (TLS 1.3, or TLS 1.2 PSK suites)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # PSK authenticates both sides; there is no certificate
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(PSK_CIPHERS)
    identity, secret = key.identity, key.key
    ctx.set_psk_client_callback(lambda _hint: (identity, secret))
    return ctx


def x509_context(directory: str, verify_peer: bool) -> ssl.SSLContext:
    """A client context from a QEMU tls-creds-x509 style directory."""
    ca = os.path.join(directory, "ca-cert.pem")
    cert = os.path.join(directory, "client-cert.pem")
    key = os.path.join(directory, "client-key.pem")
    if not os.path.isdir(directory):
        raise UsageError(f"tls-certificates={directory} is not a directory")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if verify_peer:
            if not os.path.exists(ca):
                raise UsageError(f"{ca} is missing (or use ?tls-verify-peer=false)")
            ctx.load_verify_locations(cafile=ca)
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if os.path.exists(cert):
            ctx.load_cert_chain(cert, key if os.path.exists(key) else None)
    except (ssl.SSLError, OSError) as exc:
        raise UsageError(f"cannot load TLS certificates from {directory}: {exc}") from None
    return ctx


def client_context(uri: NBDURI) -> ssl.SSLContext:
    """The SSL context an ``nbds://`` URI asks for."""
    if uri.tls_psk_file is not None:
        keys = read_psk_file(uri.tls_psk_file)
        return psk_context(choose_psk(keys, uri.tls_username, uri.tls_psk_file))
    if uri.tls_certificates is not None:
        return x509_context(uri.tls_certificates, uri.tls_verify_peer)
    ctx = ssl.create_default_context()
    if not uri.tls_verify_peer:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def start_tls(sock: socket.socket, ctx: ssl.SSLContext, uri: NBDURI) -> ssl.SSLSocket:
    """Run the TLS handshake on ``sock`` (after the server accepted NBD_OPT_STARTTLS)."""
    psk = uri.tls_psk_file is not None
    name = uri.host if (ctx.check_hostname and uri.host) else None
    try:
        tls = ctx.wrap_socket(sock, server_hostname=name, do_handshake_on_connect=False)
        tls.do_handshake()
    except ssl.SSLCertVerificationError as exc:
        raise TransportError(f"TLS handshake with {uri.address} failed: the server's "
                             f"certificate is not trusted ({exc.verify_message}) ({uri})") from None
    except (ssl.SSLError, ConnectionError) as exc:
        hint = "wrong PSK or identity?" if psk else f"{getattr(exc, 'reason', None) or exc}"
        raise TransportError(f"TLS handshake with {uri.address} failed: {hint} ({uri})") from None
    except OSError as exc:
        raise TransportError(f"TLS handshake with {uri.address} failed: {exc} ({uri})") from None
    log.debug("TLS with %s: %s %s", uri.address, tls.version(), tls.cipher())
    return tls
