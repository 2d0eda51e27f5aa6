"""Fixtures for relay tests: a random image, and a relay running in a thread between a
KernelSide (the kernel's half, see kernelside.py) and a real server."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.nbd.uri import parse_uri
from appliance.relay import ReconnectPolicy, Relay, uri_connector
from tests.relay.kernelside import KernelSide

IMAGE_SIZE = 16 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(IMAGE_SIZE))
    return path


@dataclass
class Running:
    kernel: KernelSide
    relay: Relay
    thread: threading.Thread
    errors: list[BaseException]


@contextlib.contextmanager
def run_relay(uri: str, policy: ReconnectPolicy | None = None) -> Iterator[Running]:
    """Connect to ``uri``, start a relay thread on a socketpair, yield both ends."""
    policy = policy or ReconnectPolicy(initial=0.05, maximum=0.5, connect_timeout=5.0)
    connect = uri_connector(parse_uri(uri), timeout=policy.connect_timeout)
    first = connect()
    relay_end, kernel_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    relay = Relay(relay_end, connect, first, policy=policy)
    errors: list[BaseException] = []

    def target() -> None:
        try:
            relay.run()
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=target, name="relay", daemon=True)
    thread.start()
    ks = KernelSide(kernel_end, first.info.size, first.info.flags)
    try:
        yield Running(ks, relay, thread, errors)
    finally:
        relay.stop()
        thread.join(10.0)
        kernel_end.close()
        relay_end.close()
    assert not thread.is_alive(), "relay thread did not stop"
    assert not errors, f"relay crashed: {errors!r}"


@pytest.fixture
def relay_to() -> Callable[..., contextlib.AbstractContextManager[Running]]:
    return run_relay
