"""The one run(argv) helper (appliance.run): mkosi's rules, failures told apart, each as the
caller's error class; real tools (sh, cat, sleep), no mocks."""

from __future__ import annotations

import os
import time

import pytest

from appliance.errors import BoardError, NetworkError
from appliance.run import clean_env, run


def test_missing_tool_names_its_package_with_the_callers_class_and_context() -> None:
    with pytest.raises(BoardError, match=r"^cannot load module fec: no-such-modprobe not found"):
        run(["no-such-modprobe", "fec"], error=BoardError, what="cannot load module fec")
    with pytest.raises(BoardError, match="install the Debian package device-tree-compiler"):
        run(["dtc"], error=BoardError, env={"PATH": "/nonexistent"})


def test_exit_code_and_signal_are_told_apart() -> None:
    with pytest.raises(NetworkError, match="exit code 3:\nboom"):
        run(["sh", "-c", "echo boom >&2; exit 3"], error=NetworkError)
    with pytest.raises(NetworkError, match="killed by SIGKILL"):
        run(["sh", "-c", "kill -9 $$"], error=NetworkError)


def test_unchecked_run_hands_back_status_and_both_streams() -> None:
    done = run(["sh", "-c", "echo out; echo err >&2; exit 4"], check=False)
    assert (done.returncode, done.stdout, done.stderr) == (4, "out\n", "err\n")
    merged = run(["sh", "-c", "echo out; echo err >&2"], merge_stderr=True)
    assert sorted(merged.stdout.split()) == ["err", "out"] and merged.stderr == ""


def test_input_bytes_and_stdin_from_dev_null() -> None:
    assert run(["cat"], input=b"\x00dtb\xff").stdout == "\x00dtb\ufffd"
    assert run(["cat"]).stdout == ""  # /dev/null: never waits for a terminal


def test_environment_is_inherited_plus_extra_or_clean() -> None:
    os.environ["NBDROOT_RUN_TEST"] = "inherited"
    try:
        script = ["sh", "-c", "echo ${NBDROOT_RUN_TEST:-unset} $EXTRA"]
        assert run(script, env={"EXTRA": "x"}).stdout == "inherited x\n"
        assert run(script, env={"EXTRA": "y"}, clean=True).stdout == "unset y\n"
    finally:
        del os.environ["NBDROOT_RUN_TEST"]
    assert clean_env()["LC_ALL"] == "C.UTF-8"


def test_timeout_kills_the_child() -> None:
    started = time.monotonic()
    with pytest.raises(NetworkError, match=r"^eth0: sleep did not finish in 0.2 s$"):
        run(["sleep", "30"], error=NetworkError, what="eth0", timeout=0.2)
    assert time.monotonic() - started < 10
