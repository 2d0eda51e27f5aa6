"""The shared console expect layer: whole lines only, prompts at the end, clear failures.

The console is a list of byte pieces handed out one per receive() call, so each test
decides exactly how the output is cut up; nothing sleeps.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import pytest

from appliance.console.expect import ConsoleClosed, ConsoleTimeout, Expect, FdReader


def console(pieces: Iterable[bytes], *, closes: bool = False) -> Expect:
    queue = list(pieces)

    def receive(timeout: float) -> bytes:
        if queue:
            return queue.pop(0)
        if closes:
            raise ConsoleClosed("closed")
        return b""
    return Expect(receive, "test")


def test_a_line_still_arriving_is_not_matched() -> None:
    # The CI failure of issue 11: "eth0 10.0.2.15/2" matched before "4\r\n" arrived.
    io = console([b"nbdroot: eth0 10.0.2.15/2", b"4\r\n"])
    assert io.expect(rb"eth0 (\S+)", 5).group(1) == b"10.0.2.15/24"


def test_open_ended_patterns_stop_at_the_line_end() -> None:
    io = console([b"python: 3.13", b".5 (main)\r\nnext line\r\n"])
    assert io.expect(rb"python: (.*)\r", 5).group(1) == b"3.13.5 (main)"
    assert io.expect(rb"next ([^\r\n]*)", 5).group(1) == b"line"


def test_a_partial_line_times_out_instead_of_matching() -> None:
    io = console([b"status: half"])
    with pytest.raises(ConsoleTimeout, match="not seen within 0 s"):
        io.expect(rb"status: \S+", 0)


def test_each_match_consumes_up_to_its_end() -> None:
    io = console([b"ready 1\r\nready 2\r\n"])
    assert io.expect(rb"ready (\d)", 5).group(1) == b"1"
    assert io.expect(rb"ready (\d)", 5).group(1) == b"2"
    with pytest.raises(ConsoleTimeout):
        io.expect(rb"ready (\d)", 0)


def test_a_prompt_matches_only_at_the_end_of_the_output() -> None:
    io = console([b"# echo hi\r\nhi\r\n", b"# "])  # the typed line's "# " is no prompt
    match = io.expect_prompt(rb"# ", 5)
    assert match.start() == len(b"# echo hi\r\nhi\r\n")
    assert io.pending == b""


def test_the_newest_of_repeated_prompts_is_the_one_matched() -> None:
    io = console([b"nbdroot> \r\nnbdroot> \r\nnbdroot> "])
    match = io.expect_prompt(rb"nbdroot> ", 5)
    assert match.end() == len(io.output)


def test_a_closed_console_fails_at_once_naming_it() -> None:
    io = console([b"Kernel panic - not syncing\r\n"], closes=True)
    with pytest.raises(ConsoleClosed, match="the console closed"):
        io.expect(rb"root filesystem up", 60)


def test_what_arrived_before_the_close_still_matches() -> None:
    io = console([b"nbdroot-status: ok\r\n"], closes=True)
    assert io.expect(rb"nbdroot-status: (\w+)", 5).group(1) == b"ok"


def test_fd_reader_feeds_expect_and_sees_the_end(tmp_path: object) -> None:
    read_end, write_end = os.pipe()
    reader = FdReader(read_end, "pipe")
    reader.start()
    io = Expect(reader.receive, "pipe")
    os.write(write_end, b"first li")
    os.write(write_end, b"ne\r\n")
    assert io.expect(rb"first (\S+)", 10).group(1) == b"line"
    os.close(write_end)
    with pytest.raises(ConsoleClosed):
        io.expect(rb"never", 10)
    reader.join(5)
    os.close(read_end)
