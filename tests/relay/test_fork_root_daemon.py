"""fork_root_daemon: the boot's relay child marks argv[0] with '@' in place, takes its
name (/proc/PID/comm) and reports ready."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import os, signal, time
from appliance.daemon import fork_root_daemon
from appliance.errors import ApplianceError

def serve(ready):
    ready("serving /dev/nbdX")
    time.sleep(30)

pid, line = fork_root_daemon(serve, comm="nbdroot-lease-keeper")
with open(f"/proc/{pid}/cmdline", "rb") as f:
    argv0 = f.read().split(b"\0")[0]
own = open("/proc/self/cmdline", "rb").read().split(b"\0")[0]
names = [open(f"/proc/{p}/comm").read().strip() for p in (pid, os.getpid())]
os.kill(pid, signal.SIGKILL)
os.waitpid(pid, 0)
print(line, argv0.decode(), own.decode(), *names)

def failing(ready):
    raise ApplianceError("no server")

try:
    fork_root_daemon(failing)
except ApplianceError as exc:
    print("failed:", exc)
"""


def test_child_is_marked_and_reports_ready_parent_is_untouched() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()[:2]
    line, child_argv0, parent_argv0, child_comm, parent_comm = first.rsplit(" ", 4)
    assert line == "serving /dev/nbdX"
    assert child_comm == "nbdroot-lease-k"  # the kernel keeps 15 bytes
    assert parent_comm != child_comm
    assert child_argv0.startswith("@"), child_argv0
    assert not parent_argv0.startswith("@")
    assert second == "failed: the relay failed to attach (exit status 1)"
    assert "relay: error: no server" in done.stderr
