"""The kernel's TLS record layer (kTLS): is it there, and did OpenSSL hand a socket to it.

Owns the names of the modules the kernel needs (the ``tls`` ULP and the AEADs of the suites
a GnuTLS server picks with TLS-PSK), loading them, and reading back, per socket, what the
kernel now encrypts: ``getsockopt(SOL_TLS, TLS_TX | TLS_RX)`` answers the installed
``struct tls_crypto_info`` (its first two u16: version, cipher type), ENOPROTOOPT (or
EOPNOTSUPP, by kernel version) when the socket has no TLS ULP, and EBUSY when the ULP has
no key for that direction (net/tls/tls_main.c).  A socket the nbd driver is to read must be
offloaded both ways.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from appliance import modprobe
from appliance.background import Background
from appliance.errors import KtlsUnavailable

log = logging.getLogger(__name__)

SOL_TLS = 282  # include/linux/socket.h
TLS_TX = 1     # include/uapi/linux/tls.h
TLS_RX = 2
# getsockopt with exactly sizeof(struct tls_crypto_info) answers just that head (version,
# cipher type) for any cipher; any other length must be the cipher's own struct, or EINVAL
# (do_tls_getsockopt_conf): a 56-byte buffer fitted ChaCha20-Poly1305 and failed AES-GCM-128.
CRYPTO_INFO_HEAD = 4
CIPHER_NAMES = {51: "AES-GCM-128", 52: "AES-GCM-256", 53: "AES-CCM-128",
                54: "ChaCha20-Poly1305", 55: "SM4-GCM", 56: "SM4-CCM",
                57: "ARIA-GCM-128", 58: "ARIA-GCM-256"}
VERSION_NAMES = {0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}

# In load order: the ULP, then the AEAD a GnuTLS server picks with TLS 1.3 PSK (the
# client offers ChaCha20-Poly1305 before AES-128-GCM, and a SHA-256 PSK rules out
# AES-256-GCM-SHA384); modprobe resolves each one's dependencies.
MODULES = ("tls", "libchacha", "libpoly1305", "chacha-neon", "poly1305-arm",
           "chacha20poly1305")
# AES-GCM, for a server that rules ChaCha20 out: loaded only when a session needs it and
# the kernel refused it (the session is then negotiated again), since loading it runs its
# self-tests, seconds of CPU under emulation.
AES_GCM_MODULES = ("aes-arm", "aes-arm-bs", "ghash-arm-ce", "gcm")
AVAILABLE_ULP = Path("/proc/sys/net/ipv4/tcp_available_ulp")


def load_modules(modules: tuple[str, ...] = MODULES) -> list[str]:
    """Load the modules (:func:`appliance.modprobe.load`); the ones that failed.
    Best effort: a kernel with these built in, or without them, is told apart by
    :func:`kernel_has_tls` later."""
    return modprobe.load(modules)


class BackgroundLoad(Background[list[str]]):
    """:func:`load_modules` in a thread, started early in the boot: loading the AEADs runs
    the kernel's crypto self-tests, seconds under emulation, which can overlap the console
    countdown and the network bring-up instead of delaying the root.  ``after``: a job to
    let finish first (the board's own modules, which the boot needs sooner).
    ``wait()``: the modules that failed."""

    def __init__(self, modules: tuple[str, ...] = MODULES,
                 after: Background[object] | None = None) -> None:
        self.seconds: float | None = None  # how long the modprobe took, once done

        def job() -> list[str]:
            began = time.monotonic()
            try:
                return load_modules(modules)
            finally:
                self.seconds = time.monotonic() - began
        super().__init__("ktls-modules", job, after=after)


def kernel_has_tls(available: Path = AVAILABLE_ULP) -> bool:
    """Whether the kernel offers the ``tls`` TCP upper-layer protocol now."""
    try:
        return "tls" in available.read_text().split()
    except OSError:
        return False


def enable(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Ask OpenSSL to hand the record layer to the kernel after the handshake."""
    ktls = getattr(ssl, "OP_ENABLE_KTLS", 0)
    if not ktls:
        raise KtlsUnavailable("this Python's ssl has no OP_ENABLE_KTLS (needs 3.12 and "
                              "OpenSSL 3)")
    ctx.options |= ktls
    return ctx


@dataclass(frozen=True)
class Direction:
    """What the kernel does for one direction of a socket: a cipher, or why not."""

    cipher: str | None
    why_not: str = ""

    def __str__(self) -> str:
        return self.cipher or f"not offloaded ({self.why_not})"


@dataclass(frozen=True)
class Offload:
    """Both directions of one socket."""

    tx: Direction
    rx: Direction

    @property
    def complete(self) -> bool:
        return self.tx.cipher is not None and self.rx.cipher is not None

    def describe(self) -> str:
        if self.tx.cipher is not None and self.tx.cipher == self.rx.cipher:
            return f"kTLS {self.tx.cipher} both ways"
        return f"kTLS send {self.tx}, receive {self.rx}"


def crypto_info(raw: bytes) -> str:
    """``TLS 1.3 ChaCha20-Poly1305`` from the head of a ``struct tls_crypto_info``."""
    version, cipher = struct.unpack_from("=HH", raw)
    return (f"{VERSION_NAMES.get(version, hex(version))} "
            f"{CIPHER_NAMES.get(cipher, f'cipher {cipher}')}")


def direction(sock: socket.socket, which: int) -> Direction:
    """What the kernel holds for ``which`` (TLS_TX or TLS_RX) of ``sock``."""
    try:
        raw = sock.getsockopt(SOL_TLS, which, CRYPTO_INFO_HEAD)
    except OSError as exc:
        if exc.errno in (errno.ENOPROTOOPT, errno.EOPNOTSUPP):
            return Direction(None, "no TLS ULP on the socket")
        if exc.errno == errno.EBUSY:
            return Direction(None, "OpenSSL kept this direction in user space")
        return Direction(None, exc.strerror or str(exc))
    return Direction(crypto_info(raw))


def offload_of(sock: socket.socket) -> Offload:
    """What the kernel encrypts and decrypts for ``sock`` (an SSLSocket's fd will do)."""
    return Offload(direction(sock, TLS_TX), direction(sock, TLS_RX))
