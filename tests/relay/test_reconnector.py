"""The reconnect thread hands over one connection per start, also when restarted at once.

After a replica is refused, the relay asks for the next connection while the thread that
delivered the refused one may still be ending; that start must not be lost.
"""

from __future__ import annotations

import socket
import threading

from appliance.nbd import ExportInfo
from appliance.relay import ReconnectPolicy, Upstream
from appliance.relay.reconnect import Reconnector

INFO = ExportInfo(name="", size=1 << 20, flags=1)


def test_a_start_right_after_a_delivery_delivers_again() -> None:
    made: list[socket.socket] = []
    lock = threading.Lock()

    def connect() -> Upstream:
        a, b = socket.socketpair()
        with lock:
            made.extend((a, b))
        return Upstream(a, INFO, source=f"replica-{len(made) // 2}")

    wake_r, wake_w = socket.socketpair()
    wake_r.settimeout(5.0)
    rc = Reconnector(connect, ReconnectPolicy(initial=0.01, maximum=0.01), wake_w)
    try:
        sources = []
        for _ in range(50):
            rc.start()
            assert wake_r.recv(1) == b"r"
            sources.append(rc.results.get(timeout=5.0).source)  # then restart at once
        assert sources == [f"replica-{n}" for n in range(1, 51)]
    finally:
        rc.stop()
        for s in (*made, wake_r, wake_w):
            s.close()
