"""Real NBD servers for tests: see :mod:`appliance.host.servers` (re-exported here).

Tests use the fixtures in ``tests/conftest.py`` (``nbd_servers``, ``psk_file``); helpers
that need the functions directly may import either module.
"""

from appliance.host.servers import (
    LOOPBACK,
    READY_TIMEOUT,
    STOP_TIMEOUT,
    NBDServer,
    ServerError,
    add_bitmap,
    free_port,
    make_image,
    make_psk,
    make_x509,
    qemu_io_write,
    require,
    start_nbd_server,
    start_nbdkit,
    start_qemu_nbd,
)

__all__ = [
    "LOOPBACK",
    "READY_TIMEOUT",
    "STOP_TIMEOUT",
    "NBDServer",
    "ServerError",
    "add_bitmap",
    "free_port",
    "make_image",
    "make_psk",
    "make_x509",
    "qemu_io_write",
    "require",
    "start_nbd_server",
    "start_nbdkit",
    "start_qemu_nbd",
]
