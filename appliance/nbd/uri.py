"""NBD URIs, parsed the way libnbd's ``nbd_connect_uri`` reads them.

Owns turning ``nbd://``, ``nbds://``, ``nbd+unix://`` and ``nbds+unix://`` URIs into a
frozen :class:`NBDURI`.  Pure: no sockets, no file access (the PSK file named by
``?tls-psk-file=`` is only read by the transport).

Forms (see the NBD URI specification, doc/uri.md in NetworkBlockDevice/nbd)::

    nbd://HOST[:PORT]/EXPORT            TCP, plaintext (port 10809 by default)
    nbds://[USER@]HOST[:PORT]/EXPORT    TCP, TLS required (never falls back to plaintext)
    nbd+unix:///EXPORT?socket=PATH      Unix socket
    nbds+unix://[USER@]/EXPORT?socket=PATH

The export name is the path without its leading ``/``, percent-decoded
(``nbd://h/`` is the default export ``""``, ``nbd://h//x`` is ``"/x"``).  ``USER@``
is the TLS-PSK identity.  Query parameters: ``socket``, ``tls-psk-file``,
``tls-certificates`` (a directory laid out like QEMU's tls-creds-x509: ca-cert.pem,
client-cert.pem, client-key.pem), ``tls-verify-peer`` (true/false), ``tls-username``.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from appliance.errors import UsageError

NBD_DEFAULT_PORT = 10809

_SCHEMES: dict[str, tuple[bool, bool]] = {  # scheme -> (tls, unix)
    "nbd": (False, False),
    "nbds": (True, False),
    "nbd+unix": (False, True),
    "nbds+unix": (True, True),
}
_UNSUPPORTED = ("nbd+vsock", "nbds+vsock")
_KNOWN_PARAMS = ("socket", "tls-psk-file", "tls-certificates", "tls-verify-peer", "tls-username")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class NBDURI:
    """Where an NBD export is and how to reach it."""

    uri: str
    tls: bool
    export: str = ""
    host: str | None = None
    port: int = NBD_DEFAULT_PORT
    socket: str | None = None
    tls_username: str | None = None
    tls_psk_file: str | None = None
    tls_certificates: str | None = None
    tls_verify_peer: bool = True

    @property
    def is_unix(self) -> bool:
        """True when the server is reached through a Unix socket."""
        return self.socket is not None

    @property
    def address(self) -> str:
        """``HOST:PORT`` (``[v6]:PORT``) or the socket path, for messages."""
        if self.socket is not None:
            return self.socket
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        return f"{host}:{self.port}"

    def __str__(self) -> str:
        return self.uri


def _bad(uri: str, why: str) -> UsageError:
    return UsageError(f"bad NBD URI {uri!r}: {why}")


def _query(uri: str, text: str) -> dict[str, str]:
    try:
        pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                                       separator="&")
    except ValueError as exc:
        raise _bad(uri, f"malformed query string ({exc})") from None
    params: dict[str, str] = {}
    for key, value in pairs:
        if key not in _KNOWN_PARAMS:
            raise _bad(uri, f"unknown query parameter {key!r} (known: {', '.join(_KNOWN_PARAMS)})")
        if key in params:
            raise _bad(uri, f"query parameter {key!r} given twice")
        params[key] = value
    return params


def _bool(uri: str, key: str, value: str) -> bool:
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _bad(uri, f"{key}={value!r} is not a boolean (use true or false)")


def _host_port(uri: str, parts: urllib.parse.SplitResult) -> tuple[str, int]:
    try:
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise _bad(uri, f"bad port ({exc})") from None
    if not host:
        raise _bad(uri, "no server host (write nbd://HOST[:PORT]/EXPORT)")
    if port == 0:
        raise _bad(uri, "port 0 is not a valid server port")
    return host, port if port is not None else NBD_DEFAULT_PORT


def _user(uri: str, parts: urllib.parse.SplitResult, params: dict[str, str]) -> str | None:
    if parts.password is not None:
        raise _bad(uri, "a password does not belong in the URI; use ?tls-psk-file=FILE")
    user = urllib.parse.unquote(parts.username) if parts.username else None
    named = params.get("tls-username")
    if user and named and user != named:
        raise _bad(uri, f"TLS user given twice ({user!r} and tls-username={named!r})")
    return user or named or None


def parse_uri(uri: str) -> NBDURI:
    """Parse an NBD URI; raise :class:`UsageError` saying what is wrong with a bad one."""
    scheme, sep, _ = uri.partition("://")
    if not sep:
        raise _bad(uri, "expected nbd://, nbds://, nbd+unix:// or nbds+unix://")
    scheme = scheme.lower()
    if scheme in _UNSUPPORTED:
        raise _bad(uri, f"{scheme}:// (AF_VSOCK) is not supported; use nbd:// or nbd+unix://")
    if scheme not in _SCHEMES:
        raise _bad(uri, f"unknown scheme {scheme!r}; expected one of {', '.join(_SCHEMES)}")
    tls, unix = _SCHEMES[scheme]
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError as exc:  # "Invalid IPv6 URL"
        raise _bad(uri, str(exc)) from None
    if parts.fragment:
        raise _bad(uri, "a '#fragment' has no meaning in an NBD URI")
    params = _query(uri, parts.query)
    user = _user(uri, parts, params)
    if not tls and any(k.startswith("tls-") for k in params):
        raise _bad(uri, f"TLS parameters need the {scheme.replace('nbd', 'nbds', 1)}:// scheme")
    if params.get("tls-psk-file") == "" or params.get("tls-certificates") == "":
        raise _bad(uri, "empty tls-psk-file or tls-certificates")
    if "tls-psk-file" in params and "tls-certificates" in params:
        raise _bad(uri, "give either tls-psk-file or tls-certificates, not both")
    export = urllib.parse.unquote(parts.path[1:] if parts.path.startswith("/") else parts.path,
                                  errors="strict")
    if len(export.encode()) > 4096:
        raise _bad(uri, "export name longer than 4096 bytes")
    verify = _bool(uri, "tls-verify-peer", params.get("tls-verify-peer", "true"))
    sock: str | None = None
    host: str | None = None
    port = NBD_DEFAULT_PORT
    if unix:
        sock = params.get("socket")
        if not sock:
            raise _bad(uri, "a unix URI needs ?socket=PATH")
        if parts.netloc.rpartition("@")[2]:
            raise _bad(uri, "a unix URI has no host or port (write nbd+unix:///EXPORT?socket=PATH)")
    elif "socket" in params:
        raise _bad(uri, f"?socket= needs the {scheme}+unix:// scheme")
    else:
        host, port = _host_port(uri, parts)
    return NBDURI(uri=uri, tls=tls, export=export, host=host, port=port, socket=sock,
                  tls_username=user, tls_psk_file=params.get("tls-psk-file"),
                  tls_certificates=params.get("tls-certificates"), tls_verify_peer=verify)
