"""The thread that brings the server back: attempts with backoff, result handed to the loop.

Connecting, the TLS handshake and negotiation block, so they run here and never in the
relay's event loop, which keeps answering the kernel (and fails requests with EIO once
the outage outlasts the deadline).  The thread ends after one success or when stopped;
the loop reads the result from :attr:`Reconnector.results` when the wake-up socket fires.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time

from appliance.errors import ApplianceError
from appliance.relay.policy import ReconnectPolicy
from appliance.relay.upstream import Connector, Upstream

log = logging.getLogger(__name__)


class Reconnector:
    """Runs ``connect`` with backoff in a daemon thread until it succeeds or is stopped."""

    def __init__(self, connect: Connector, policy: ReconnectPolicy, wake: socket.socket) -> None:
        self._connect = connect
        self._policy = policy
        self._wake = wake
        self._stop = threading.Event()
        self._delivered = threading.Event()  # the result is handed over; the thread ends
        self._thread: threading.Thread | None = None
        self.results: queue.SimpleQueue[Upstream] = queue.SimpleQueue()
        self.attempts = 0
        self.last_error = ""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, first_delay: float = 0.0) -> None:
        """Start trying (after ``first_delay`` seconds); no-op while already trying."""
        if self._thread is not None and self._delivered.is_set():
            self._thread.join()  # it has handed over its connection and is ending
        if self.running:
            return
        self._delivered.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(first_delay,),
                                        name="relay-reconnect", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self._policy.connect_timeout + 1.0)

    def _run(self, first_delay: float) -> None:
        if first_delay and self._stop.wait(first_delay):
            return
        attempt = 0
        while not self._stop.is_set():
            self.attempts += 1
            started = time.monotonic()
            try:
                upstream = self._connect()
            except (ApplianceError, OSError) as exc:
                self.last_error = str(exc)
                pause = self._policy.delay(attempt)
                level = logging.INFO if attempt < 3 else logging.DEBUG
                log.log(level, "reconnect attempt %d failed after %.2fs: %s; next in %.1fs",
                        self.attempts, time.monotonic() - started, exc, pause)
                attempt += 1
                if self._stop.wait(pause):
                    return
                continue
            if self._stop.is_set():
                upstream.sock.close()
                return
            self._delivered.set()
            self.results.put(upstream)
            try:
                self._wake.send(b"r")
            except OSError:  # the loop is gone; nothing to tell
                upstream.sock.close()
            return
