"""The relay under test, in a thread: one shared runner for the relay, fault and load tests.

:func:`relay_running` connects once with a connector of the caller's choosing (the netns
tests connect from inside a namespace), starts a :class:`~appliance.relay.Relay` thread
on a socketpair and yields the kernel's end as a :class:`tests.relay.kernelside.
KernelSide`; on exit it stops the relay and fails the test if the thread crashed or hung.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.relay import Connector, ReconnectPolicy, Relay
from tests.relay.kernelside import KernelSide

JOIN_TIMEOUT = 15.0  # seconds for the relay thread to stop after relay.stop()


@dataclass
class RelayRun:
    """A running relay: the kernel's end, the relay, its thread and what it raised."""

    kernel: KernelSide
    relay: Relay
    thread: threading.Thread
    errors: list[BaseException]


@contextlib.contextmanager
def relay_running(connect: Connector, policy: ReconnectPolicy) -> Iterator[RelayRun]:
    """Connect once, run a relay thread, yield the kernel side; stop and check on exit."""
    first = connect()
    relay_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    relay = Relay(relay_end, connect, first, policy=policy)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            relay.run()
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=target, name="relay", daemon=True)
    thread.start()
    ks = KernelSide(kernel_end, first.info.size, first.info.flags)
    try:
        yield RelayRun(ks, relay, thread, errors)
    finally:
        relay.stop()
        thread.join(JOIN_TIMEOUT)
        kernel_end.close()
        relay_end.close()
    assert not thread.is_alive(), "relay thread did not stop"
    assert not errors, f"relay crashed: {errors!r}"
