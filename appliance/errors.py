"""The agent's one exception hierarchy.

Every error a user can meet derives from :class:`ApplianceError` and carries a
message that says what went wrong and, where possible, what to do about it.  The
CLI prints ``str(error)`` on one line and exits with ``error.exit_code``; a
traceback is shown only with ``--debug``.

NBD errors are split by what survives them, as ovirt-imageio does:

* :class:`ProtocolError` -- the peer broke the protocol; the connection is dead.
* :class:`LocalProtocolError` -- we misused the sans-IO core (a bug in the caller).
* :class:`OptionError` -- the server refused an option during negotiation.
* :class:`RequestError` -- one command failed; the connection is still usable.
"""

from __future__ import annotations

import errno as _errno


class ApplianceError(Exception):
    """Base of every error the agent reports to a user."""

    exit_code = 1


class UsageError(ApplianceError):
    """The command line or an argument is wrong."""

    exit_code = 2


class NBDError(ApplianceError):
    """Anything that went wrong talking NBD."""


class ProtocolError(NBDError):
    """The server sent something the protocol forbids; the connection must be dropped."""


class LocalProtocolError(NBDError):
    """The caller asked the protocol core for something invalid in the current state.

    ``errno`` is what a relay answers its own client with when it cannot forward the
    request: EINVAL for an offset or length the export does not allow, else EIO.
    """

    def __init__(self, message: str, *, error: int = _errno.EIO) -> None:
        super().__init__(message)
        self.errno = error


class OptionError(NBDError):
    """The server answered an option with an NBD_REP_ERR_* reply."""

    def __init__(self, message: str, *, option: int = 0, reply: int = 0) -> None:
        super().__init__(message)
        self.option = option
        self.reply = reply


class RequestError(NBDError):
    """A transmission command failed with an NBD error; the connection is still usable."""

    def __init__(self, message: str, *, error: int = _errno.EIO, offset: int | None = None) -> None:
        super().__init__(message)
        self.errno = error
        self.offset = offset


class TransportError(NBDError):
    """Connecting, TLS or the socket failed (refused, timed out, wrong key, connection lost)."""


class ConfigError(ApplianceError):
    """A configuration value or file is invalid."""


class PSKError(ConfigError, UsageError):
    """A PSK file or key cannot be read, parsed or written (:mod:`appliance.config.psk`).

    Both a ConfigError (a stored key) and a UsageError (a key file named on the command
    line), so existing handlers of either catch it; it exits with status 1."""

    exit_code = 1


class BoardError(ApplianceError):
    """Board detection, kernel modules or PHY selection failed."""


class NetworkError(ApplianceError):
    """Bringing up or configuring the network failed."""


class KernelError(ApplianceError):
    """Attaching to or detaching from the kernel's nbd driver failed."""


class KtlsUnavailable(KernelError):
    """The kernel-TLS data path cannot be used here (no ``tls`` in the kernel, no offload
    of the negotiated cipher, replicas); the boot falls back to the relay, naming this."""


class OffloadRefused(KtlsUnavailable):
    """The kernel did not take over TLS for the negotiated ``cipher`` (OpenSSL's name,
    with the protocol version): its AEAD is not loaded, or cannot be offloaded."""

    def __init__(self, message: str, cipher: str) -> None:
        super().__init__(message)
        self.cipher = cipher


class ImageError(ApplianceError):
    """Building the boot image failed."""


class ConsoleError(ApplianceError):
    """The serial console dialogue failed."""


class Terminated(ApplianceError):
    """A signal (SIGHUP, SIGTERM) asked the command to stop; its children were ended."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.exit_code = 128 + signum
