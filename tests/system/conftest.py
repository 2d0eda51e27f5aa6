"""Fixtures of the system tests: the built image, and a console log per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.image_artefacts import built_image_dir


@pytest.fixture(scope="session")
def image_dir() -> Path:
    return built_image_dir()
