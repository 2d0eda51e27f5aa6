"""A network blackhole inside QEMU, switched on and off while the board runs.

The board's NIC gets its user-mode netdev an id, and a ``filter-redirector`` on that
netdev sends every frame, both ways, to a ``null`` chardev: while the filter's status is
``on``, nothing the board sends reaches QEMU's network and nothing reaches the board.
The link stays up (no carrier change) and no connection is closed or reset: requests
simply get no answer, as behind a dead switch.  QMP on a Unix socket flips the status.

The socket lives in a short directory of its own (a Unix socket path has ~108 bytes),
removed by :meth:`Blackhole.close`.
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from image.qemu import NIC

NETDEV = "n0"
FILTER = "blackhole"
IO_TIMEOUT = 10.0


class Blackhole:
    """The QEMU arguments of a switchable blackhole, and the switch."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="nbdroot-qmp-"))
        self.socket_path = self._dir / "qmp.sock"
        self._sock: socket.socket | None = None
        self._file: Any = None

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` (a board's qemu-system-arm command) with the NIC's netdev named, the
        filter (off) and a QMP server added."""
        out = list(argv)
        i = out.index(NIC)
        out[i] = NIC.replace("user,", f"user,id={NETDEV},", 1)
        return [*out, "-chardev", "null,id=blackhole-sink",
                "-object", f"filter-redirector,id={FILTER},netdev={NETDEV},queue=all,"
                           "outdev=blackhole-sink,status=off",
                "-qmp", f"unix:{self.socket_path},server=on,wait=off"]

    def set(self, on: bool) -> None:
        """Switch the blackhole on (every frame dropped) or off."""
        self._command("qom-set", path=f"/objects/{FILTER}", property="status",
                      value="on" if on else "off")

    def _command(self, name: str, **arguments: object) -> object:
        if self._file is None:
            self._connect()
        self._file.write(json.dumps({"execute": name, "arguments": arguments}) + "\n")
        self._file.flush()
        return self._answer()

    def _connect(self) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(IO_TIMEOUT)
        self._sock.connect(str(self.socket_path))
        self._file = self._sock.makefile("rw")
        self._file.readline()  # the greeting
        self._file.write(json.dumps({"execute": "qmp_capabilities"}) + "\n")
        self._file.flush()
        self._answer()

    def _answer(self) -> object:
        """The next reply, skipping events; a QMP error raises."""
        while True:
            line = self._file.readline()
            if not line:
                raise ConnectionError("QMP: QEMU closed the monitor")
            reply = json.loads(line)
            if "error" in reply:
                raise RuntimeError(f"QMP: {reply['error']}")
            if "return" in reply:
                return reply["return"]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)
