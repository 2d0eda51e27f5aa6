"""Running code in a fresh interpreter, for what is process-wide (import hooks, stand-in
modules, ``sys.modules``): the code's stdout, stripped; a non-zero exit fails the test with
its stderr."""

from __future__ import annotations

import subprocess
import sys


def fresh_python(code: str, *args: str, timeout: float = 120.0) -> str:
    """Run ``python -c code args...`` with this interpreter; its stdout, stripped."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
