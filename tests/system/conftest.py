"""Fixtures of the system tests: the built image, and the servers a test started."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.host.servers import NBDServer
from tests.image_artefacts import built_image_dir


@pytest.fixture(scope="session")
def image_dir() -> Path:
    return built_image_dir()


@pytest.fixture
def serve() -> Iterator[list[NBDServer]]:
    """The NBD servers a test started (it appends them); each is stopped by PID afterwards,
    whether the test passed or not."""
    started: list[NBDServer] = []
    yield started
    for server in started:
        server.stop()
