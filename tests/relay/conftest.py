"""Fixtures for relay tests: a random image, and a relay running in a thread between a
KernelSide (the kernel's half, see kernelside.py) and a real server (see harness.py)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.nbd.uri import parse_uri
from appliance.relay import ReconnectPolicy, uri_connector
from tests.relay.harness import RelayRun, relay_running

IMAGE_SIZE = 16 << 20


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(IMAGE_SIZE))
    return path


def run_relay(uri: str, policy: ReconnectPolicy | None = None
              ) -> contextlib.AbstractContextManager[RelayRun]:
    """Connect to ``uri``, start a relay thread on a socketpair, yield both ends."""
    policy = policy or ReconnectPolicy(initial=0.05, maximum=0.5, connect_timeout=5.0)
    return relay_running(uri_connector(parse_uri(uri), timeout=policy.connect_timeout), policy)


@pytest.fixture
def relay_to() -> Callable[..., contextlib.AbstractContextManager[RelayRun]]:
    return run_relay
