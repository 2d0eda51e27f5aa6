"""A TLS-PSK front for a plaintext NBD server, which can end its TLS with an alert on demand.

For the kTLS path's socket-death tests: GnuTLS servers give no handle to send a TLS alert
(or a KeyUpdate) while the connection stays open, so this proxy terminates TLS itself --
with Python's ssl, i.e. OpenSSL, which also sends TLS 1.3 session tickets after the
handshake, as OpenSSL-based servers do.  Per connection it forwards the server's greeting
and the client's flags, answers NBD_OPT_STARTTLS itself, runs the TLS-PSK handshake, then
copies bytes both ways in one thread.  :meth:`TLSProxy.send_alert` makes every open
connection send close_notify (an alert record, content type 21) and then keep the TCP
connection open and silent, so the client meets the alert and nothing else.

Loopback only; every wait is bounded; :meth:`TLSProxy.close` ends the threads.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import threading

from appliance.nbd import proto

LOOPBACK = "127.0.0.1"
IO_TIMEOUT = 30.0
GREETING = 18  # NBDMAGIC, IHAVEOPT, 16-bit handshake flags


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("EOF")
        out += chunk
    return bytes(out)


class TLSProxy:
    """Listens on 127.0.0.1:``port``; TLS-PSK (``identity``/``key``) in, plaintext to
    ``upstream_port``."""

    def __init__(self, upstream_port: int, identity: str, key: bytes) -> None:
        self._upstream = upstream_port
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ctx.set_ciphers("PSK")
        self._ctx.set_psk_server_callback(lambda who: key if who == identity else b"")
        self._listener = socket.create_server((LOOPBACK, 0))
        self._listener.settimeout(0.5)
        self.port: int = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._alert = threading.Event()
        self.alerts_sent = 0
        self.connections = 0
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            t.start()
            self._threads.append(t)

    def send_alert(self) -> None:
        """Every connection open now sends close_notify and falls silent."""
        self._alert.set()

    def _serve(self, client: socket.socket) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            client.settimeout(IO_TIMEOUT)
            up = stack.enter_context(socket.create_connection((LOOPBACK, self._upstream),
                                                              timeout=IO_TIMEOUT))
            try:
                tls = self._start_tls(client, up)
            except (OSError, ssl.SSLError, ConnectionError):
                return
            alert_from = self._alert.is_set()  # connections after an alert stay good
            self._pump(tls, up, alerting=not alert_from)

    def _start_tls(self, client: socket.socket, up: socket.socket) -> ssl.SSLSocket:
        client.sendall(recv_exact(up, GREETING))
        up.sendall(recv_exact(client, 4))
        _magic, option, length = struct.unpack(">QII", recv_exact(client, 16))
        if option != proto.NBD_OPT_STARTTLS or length:
            raise ConnectionError(f"expected STARTTLS, got option {option}")
        client.sendall(struct.pack(">QIII", proto.NBD_REP_MAGIC, option,
                                   proto.Rep.NBD_REP_ACK, 0))
        return self._ctx.wrap_socket(client, server_side=True)

    def _pump(self, tls: ssl.SSLSocket, up: socket.socket, *, alerting: bool) -> None:
        while not self._stop.is_set():
            if alerting and self._alert.is_set():
                self._close_notify(tls)
                return
            ready, _, _ = select.select([tls, up], [], [], 0.2)
            try:
                if tls in ready or tls.pending():
                    data = tls.recv(1 << 16)
                    if not data:
                        return
                    up.sendall(data)
                if up in ready:
                    data = up.recv(1 << 16)
                    if not data:
                        return
                    tls.sendall(data)
            except (OSError, ssl.SSLError):
                return

    def _close_notify(self, tls: ssl.SSLSocket) -> None:
        tls.settimeout(0.5)
        with contextlib.suppress(OSError, ssl.SSLError):
            tls.unwrap()  # sends close_notify; the wait for the peer's answer times out
        self.alerts_sent += 1
        self._stop.wait(IO_TIMEOUT)  # keep the TCP connection open and silent

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        self._accepter.join(5)
        for t in self._threads:
            t.join(5)
