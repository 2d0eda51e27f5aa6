"""Telling a stale OpenSSL error from a broken TLS connection, and clearing it.

OpenSSL keeps an error queue per thread, and ``SSL_get_error()`` reads it before the
connection's own state: "the current thread's error queue must be empty before the TLS
I/O operation is attempted".  CPython's ``_ssl`` does not empty it before each read or
write (CPython issue 148594), so an entry left behind by an earlier failure can turn the
"no data yet" of a non-blocking read into an error.  Seen on the board: after qemu-nbd was
killed while the relay was writing ("send failed: [Errno 32] Broken pipe"), every later
connection, made and negotiated in the reconnect thread, failed in the relay's thread on
its first read that had to wait ("receive failed: [Errno 32] Broken pipe"), and the relay
closed it and reconnected, every 0.2 s.

:func:`healthy` asks the kernel about the socket itself (nothing pending, no error, no
end of stream); :func:`clear_thread_errors` empties this thread's queue (and errno) the
way OpenSSL does when a handshake starts: by starting one, on memory BIOs, that is thrown
away.
"""

from __future__ import annotations

import contextlib
import socket
import ssl


def healthy(sock: socket.socket) -> bool:
    """The TCP connection under ``sock`` has no error and no end of stream pending, and
    nothing to read now: an error the TLS layer just reported did not come from it."""
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return False
        # The raw socket's recv: an SSLSocket refuses flags.
        socket.socket.recv(sock, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True  # alive, and nothing waiting that the TLS layer failed to read
    except OSError:
        return False
    return False  # data or the end of stream waiting: the error may be real


def clear_thread_errors() -> None:
    """Empty this thread's OpenSSL error queue (and errno)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    obj = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO())
    with contextlib.suppress(ssl.SSLError):  # wants the server's answer, of course
        obj.do_handshake()  # writes a ClientHello into the BIO
