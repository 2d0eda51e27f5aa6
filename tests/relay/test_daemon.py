"""Root-daemon hygiene, in child processes (mlockall and chdir must not touch pytest)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from appliance import __version__
from appliance.daemon import ROOT_DAEMON_ARGV0, nbd_swaps, root_daemon_command


def test_root_daemon_command_runs_the_cli_with_at_argv0(tmp_path: Path) -> None:
    proc = subprocess.run(root_daemon_command(["--version"]), executable=sys.executable,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert __version__ in proc.stdout


def test_at_argv0_is_what_proc_cmdline_shows() -> None:
    code = "print(open('/proc/self/cmdline','rb').read().split(b'\\0')[0].decode())"
    proc = subprocess.run([ROOT_DAEMON_ARGV0, "-c", code], executable=sys.executable,
                          capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == ROOT_DAEMON_ARGV0


def test_harden_in_a_child() -> None:
    code = """
import json, os
from appliance.daemon import harden
r = harden()
status = open('/proc/self/status').read()
vmlck = [l.split()[1] for l in status.splitlines() if l.startswith('VmLck')][0]
adj = open('/proc/self/oom_score_adj').read().strip()
print(json.dumps({'done': r.done, 'skipped': r.skipped, 'cwd': os.getcwd(),
                  'vmlck_kb': int(vmlck), 'oom': adj}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd="/tmp")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["cwd"] == "/"
    if "mlockall" in out["done"]:
        assert out["vmlck_kb"] > 0
    else:
        assert any(s.startswith("mlockall") for s in out["skipped"])
    if "oom_score_adj=-1000" in out["done"]:
        assert out["oom"] == "-1000"
    assert any(s.startswith("argv0") for s in out["skipped"])  # not re-executed here


def test_nbd_swap_is_reported(tmp_path: Path) -> None:
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n"
                     "/dev/nbd0p2  partition\t1024\t0\t-2\n"
                     "/swapfile  file\t1024\t0\t-3\n")
    assert nbd_swaps(str(swaps)) == ["/dev/nbd0p2"]
    assert nbd_swaps(str(tmp_path / "missing")) == []


def test_a_deferred_lock_happens_after_harden_in_its_thread() -> None:
    code = """
import json
from appliance.daemon import harden, lock_in_background
def locked():
    status = open('/proc/self/status').read()
    return int([l.split()[1] for l in status.splitlines() if l.startswith('VmLck')][0])
r = harden(lock_later=True)
before = locked()
lock_in_background(r).join(60)
print(json.dumps({'before': before, 'after': locked(), 'done': r.done, 'skipped': r.skipped}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd="/tmp")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["before"] == 0  # harden left the lock for later
    if "mlockall" in out["done"]:
        assert out["after"] > 0
    else:
        assert any(s.startswith("mlockall") for s in out["skipped"])
