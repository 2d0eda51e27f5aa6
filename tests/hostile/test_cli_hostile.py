"""The real CLI (``appliance nbd info`` / ``copy``) as a subprocess against hostile servers.

A subset of the in-process attacks, through the path a user runs: exit status 1, exactly
one ``appliance: error:`` line, no traceback, nothing half-written on stdout, within a
deadline, with the address space capped (RLIMIT_AS) so a server cannot make the client
allocate gigabytes; the largest RSS seen is reported.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import threading

import pytest

from tests.hostile import harness
from tests.hostile.test_fuzz_negotiation import NAMED
from tests.hostile.test_fuzz_transmission import NAMED_TX, on_first_read, serving
from tests.hostile_server import EXPORT_SIZE, HostileServer

pytestmark = pytest.mark.xdist_group("hostile")  # one worker: one tally (conftest)

ADDRESS_SPACE = 2 << 30  # python + cryptography need some; gigabytes of buffers do not fit
DEADLINE = 60.0


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_cli(script, *argv: str) -> subprocess.CompletedProcess[str]:
    srv = HostileServer(script)
    uri = srv.uri("disk")
    try:
        r = run_measured([sys.executable, "-m", "appliance",
                          *(a.replace("URI", uri) for a in argv)])
    finally:
        srv.close()
    harness.TALLY["cases"] += 1
    harness.TALLY["cli"] += 1
    return r


def run_measured(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (address space capped) and note its own peak RSS in CLI_RSS.

    The child is reaped with wait4(), which reports that child's own usage:
    RUSAGE_CHILDREN would also count every earlier child of this pytest process
    (QEMU boards among them).
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                preexec_fn=_limit)
        reaped: list[tuple[int, int, resource.struct_rusage]] = []
        waiter = threading.Thread(target=lambda: reaped.append(os.wait4(proc.pid, 0)))
        waiter.start()
        waiter.join(DEADLINE)
        if not reaped:
            proc.kill()
            waiter.join(10)
            raise subprocess.TimeoutExpired(argv, DEADLINE)
        _, status, usage = reaped[0]
        proc.returncode = os.waitstatus_to_exitcode(status)
        harness.CLI_RSS[0] = max(harness.CLI_RSS[0], usage.ru_maxrss * 1024)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, out.read().decode(),
                                           err.read().decode())


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("appliance: error: "), r.stderr
    assert "127.0.0.1" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("name", ["bad NBDMAGIC", "option reply length 2^32-1",
                                  "endless replies (10001 x NBD_REP_SERVER)",
                                  "truncated option reply"])
def test_cli_info_against_hostile_negotiation(name: str) -> None:
    r = run_cli(NAMED[name], "nbd", "info", "URI")
    one_error_line(r)
    assert r.stdout == ""


@pytest.mark.parametrize("name", ["overlapping chunks", "extended chunk length 2^63",
                                  "chunk beyond the request", "wrong cookie",
                                  "DONE never sent, then close"])
def test_cli_copy_against_hostile_replies(name: str) -> None:
    """Every READ of the copy is answered by the attack; other commands validly."""
    attack, extended_ok = NAMED_TX[name]
    r = run_cli(serving(on_first_read(attack), extended_ok=extended_ok),
                "nbd", "copy", "--no-progress", "URI", "-")
    line = one_error_line(r)
    assert len(r.stdout) <= EXPORT_SIZE, "more bytes out than the export holds"
    # Chunks are streamed as they arrive, so stdout may hold data from chunks received
    # before the reply broke; the exit status and the error line are what tell the user.
    assert "server" in line or "reply" in line or "chunk" in line, line


def test_cli_rss_figure_is_bounded() -> None:
    """Every CLI child so far stayed far below the address-space cap."""
    if harness.CLI_RSS[0] == 0:
        run_cli(NAMED["bad NBDMAGIC"], "nbd", "info", "URI")  # this test run alone
    rss = harness.CLI_RSS[0]
    assert 0 < rss < 512 << 20, f"a CLI child used {rss >> 20} MiB"
