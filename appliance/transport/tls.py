"""TLS for NBD clients: PSK key files, SSL contexts and the STARTTLS handshake.

Owns:

* a TLS-PSK context from the key in a PSK file (read by :mod:`appliance.config.psk`,
  the one PSK-file module), never logging the key;
* building the client :class:`ssl.SSLContext` for TLS-PSK (TLS 1.3 and 1.2 PSK suites,
  which GnuTLS servers accept) or X.509 (a directory laid out like QEMU's tls-creds-x509:
  ``ca-cert.pem``, ``client-cert.pem``, ``client-key.pem``);
* wrapping the socket after NBD_OPT_STARTTLS and turning handshake failures into a
  one-line :class:`TransportError`.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl

from appliance.config.psk import PSKey, choose_psk, read_keys
from appliance.errors import TransportError, UsageError
from appliance.nbd.uri import NBDURI

log = logging.getLogger(__name__)

# OpenSSL names for TLS 1.2 PSK suites; TLS 1.3 suites work with PSK without listing.
PSK_CIPHERS = "ECDHE-PSK:DHE-PSK:PSK:!aNULL:!eNULL:!MD5:!RC4:!3DES"
MAX_PSK_IDENTITY = 255  # what fits an NBD/TLS identity comfortably (qemu limits it too)


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
        keys = read_keys(uri.tls_psk_file)
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
