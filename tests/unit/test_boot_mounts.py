"""appliance.boot.mounts: the real mount(2) in a mount namespace of the test's own
(``unshare --mount``, private propagation): a tmpfs mounted, moved, and a failing mount
named in one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import os, sys
from appliance.boot.mounts import MS_NOATIME, mount, move
from appliance.errors import ApplianceError
a, b = sys.argv[1], sys.argv[2]
mount("tmpfs", a, "tmpfs", MS_NOATIME, "size=1M,mode=0700")
open(os.path.join(a, "marker"), "w").write("here")
move(a, b)
print(open(os.path.join(b, "marker")).read(), os.path.exists(os.path.join(a, "marker")))
print(oct(os.stat(b).st_mode & 0o777))
try:
    mount("/dev/nbdroot-no-such-device", a, "ext4")
except ApplianceError as exc:
    print(exc)
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_mount_move_and_a_failure(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                           "-c", SCRIPT, str(a), str(b)], capture_output=True, text=True,
                          timeout=60, check=False)
    if done.returncode != 0 and "Operation not permitted" in done.stderr:
        pytest.skip("no permission to create a mount namespace")
    assert done.returncode == 0, done.stderr
    moved, mode, failure = done.stdout.splitlines()
    assert moved == "here False"
    assert mode == "0o700"
    assert failure == (f"mount -t ext4 /dev/nbdroot-no-such-device {a} failed: "
                       "No such file or directory")
