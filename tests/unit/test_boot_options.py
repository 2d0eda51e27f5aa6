"""The kernel command line's boot options, and ``appliance.log=`` on the console."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from appliance.boot.sequence import BootOptions


def test_the_options_come_from_the_command_line() -> None:
    opts = BootOptions.from_cmdline("console=ttymxc1,115200 rdinit=/init appliance.init=boot "
                                    "nbdroot.device=/dev/nbd3 init=/lib/systemd/systemd "
                                    "appliance.log=DEBUG quiet")
    assert opts == BootOptions(config=Path("/etc/nbdroot"), device="/dev/nbd3",
                               init="/lib/systemd/systemd", log_level="debug")
    assert BootOptions.from_cmdline("quiet").log_level == "warning"


LOGGING = """
import logging
from appliance.boot.pid1 import setup_logging
setup_logging({level!r})
logging.getLogger("appliance.net.up").info("carrier after 0.2 s")
logging.getLogger("appliance.net.up").debug("hidden unless debug")
"""


def stderr_of(level: str) -> str:
    done = subprocess.run([sys.executable, "-c", LOGGING.format(level=level)],
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stderr


def test_appliance_log_shows_the_agents_log_with_uptime_stamps() -> None:
    lines = stderr_of("info").splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"\[ *\d+\.\d\ds\] INFO appliance\.net\.up: carrier after 0\.2 s",
                        lines[0]), lines


def test_an_unknown_level_is_said_once_and_warnings_are_logged() -> None:
    out = stderr_of("chatty")
    assert "appliance.log=chatty: not one of debug, info, warning, error" in out
    assert "carrier" not in out
