"""Shared pytest fixtures.

NBD servers (see ``tests/servers.py`` for the helpers behind them):

* ``psk_file`` -- a fresh TLS-PSK key file ``DIR/keys.psk`` (identity ``alice``, mode 0600),
  usable by qemu-nbd (``dir=DIR``), nbdkit (``--tls-psk=FILE``) and our client
  (``?tls-psk-file=FILE``).
* ``nbd_servers`` -- a factory with ``.qemu_nbd(image, ...)`` and ``.nbdkit(plugin, ...)``
  returning :class:`tests.servers.NBDServer`; every server it started is stopped by PID when
  the test ends, pass or fail.

And the run's figures (``tests/figures.py``): gathered from every test worker, repeated in
the terminal summary.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import figures, servers


@pytest.fixture
def psk_file(tmp_path: Path) -> Path:
    return servers.make_psk(tmp_path / "psk")


class ServerFactory:
    """Starts real NBD servers in per-server directories under the test's tmp_path."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self._n = itertools.count()
        self.started: list[servers.NBDServer] = []

    def _dir(self, name: str) -> Path:
        return self._tmp / f"{name}-{next(self._n)}"

    def qemu_nbd(self, image: Path, **kwargs: Any) -> servers.NBDServer:
        return self._track(lambda: servers.start_qemu_nbd(image, self._dir("qemu-nbd"), **kwargs))

    def nbdkit(self, plugin: str, *args: str, **kwargs: Any) -> servers.NBDServer:
        return self._track(lambda: servers.start_nbdkit(plugin, *args, tmp=self._dir("nbdkit"),
                                                        **kwargs))

    def nbd_server(self, image: Path, **kwargs: Any) -> servers.NBDServer:
        return self._track(lambda: servers.start_nbd_server(image, self._dir("nbd-server"),
                                                            **kwargs))

    def _track(self, start: Any) -> servers.NBDServer:
        server: servers.NBDServer = start()
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in reversed(self.started):
            server.stop()


@pytest.fixture
def nbd_servers(tmp_path: Path) -> Iterator[ServerFactory]:
    factory = ServerFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or a run without workers
        config.stash[_FIGURES_RUN] = figures.start_run()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    figures.terminal_summary(terminalreporter)


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_FIGURES_RUN, None)
    if path is not None:
        figures.end_run(path)


_FIGURES_RUN = pytest.StashKey[Path]()
