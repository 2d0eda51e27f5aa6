"""The ``appliance`` entry point: help, version, and one-line errors."""

import subprocess
import sys


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance", *argv],
                          capture_output=True, text=True, timeout=60)


def test_help_lists_usage() -> None:
    r = run("--help")
    assert r.returncode == 0
    assert "usage: appliance" in r.stdout


def test_unknown_subcommand_is_a_usage_error() -> None:
    r = run("no-such-command")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
