"""A loopback TCP proxy whose existing connections can be *cut*: bytes stop flowing both
ways but nothing is closed -- what a pulled cable looks like to both ends (no FIN, no RST).
Connections made after the cut flow normally.  For relay tests only."""

from __future__ import annotations

import contextlib
import select
import socket
import threading


class CuttableProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._generation = 0
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def cut(self) -> None:
        """Existing connections go silent from now on."""
        self._generation += 1

    def close(self) -> None:
        self._stop.set()
        for s in [self.listener, *self._socks]:
            with contextlib.suppress(OSError):
                s.close()
        for t in self._threads:
            t.join(2.0)

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=5)
            self._socks += [client, server]
            t = threading.Thread(target=self._pump, args=(client, server, self._generation),
                                 daemon=True)
            self._threads.append(t)
            t.start()

    def _pump(self, a: socket.socket, b: socket.socket, generation: int) -> None:
        peer = {a: b, b: a}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([a, b], [], [], 0.1)
            except (OSError, ValueError):
                return
            if self._generation != generation:
                continue  # cut: hold everything, close nothing
            for s in ready:
                try:
                    data = s.recv(65536)
                    if not data:
                        peer[s].shutdown(socket.SHUT_WR)
                        return
                    peer[s].sendall(data)
                except OSError:
                    return
