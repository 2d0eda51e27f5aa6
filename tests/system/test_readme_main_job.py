"""The README's main job exactly as a new user runs it: from the root of a fresh clone.

``git clone`` of this checkout (its committed HEAD), then ``./setup.sh demo --check`` in
the clone, relative paths and all: set-up (Debian packages, .venv), the image build
into the clone's own ``out/``, qemu-nbd over TLS-PSK and the headless boot.  This is the
run that once failed for every new user (a relative ``tls-creds-psk dir=``) while every
other test passed.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.figures import figure

pytestmark = [pytest.mark.slow, pytest.mark.system]

REPO = Path(__file__).resolve().parents[2]
MAIN_JOB = "./setup.sh demo --check"
TIMEOUT = 2700.0  # set-up, a cold image build (two roots) and a systemd boot, 2 loaded cores
# The main job boots the default data path: the kernel reads the TLS socket (kTLS)
OK = re.compile(r"^demo: ok: the board runs from /dev/nbd0 through the kTLS supervisor "
                r"\(pid \d+\), ([\d.]+) s after QEMU started$", re.M)


def test_the_readme_names_the_main_job() -> None:
    assert MAIN_JOB in (REPO / "README.md").read_text()


def test_the_main_job_passes_in_a_fresh_clone(tmp_path: Path) -> None:
    clone = tmp_path / "nbdroot-imx6"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    run = subprocess.run(MAIN_JOB.split(), cwd=clone, capture_output=True, text=True,
                         stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "Traceback" not in run.stderr
    ok = OK.search(run.stderr)
    assert ok is not None, run.stderr[-4000:]
    figure(f"README main job in a fresh clone: QEMU start -> root on NBD {ok.group(1)} s")
