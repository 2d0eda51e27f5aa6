"""Hygiene for the process that serves the root disk.

A process that answers the kernel's I/O for ``/`` must survive everything that
would normally kill or stall it:

* **argv[0] starting with '@'.**  systemd (and dracut's shutdown) leave alone
  processes whose ``argv[0][0] == '@'`` (systemd's "root storage daemons" rule)
  when killing everything at switch_root and at shutdown.  What is checked is
  ``/proc/PID/cmdline``, i.e. argv, which prctl(PR_SET_NAME) and /proc/self/comm
  cannot change; the only honest way for a Python program is to re-exec itself
  with ``argv[0] = '@appliance-relay'`` (:func:`reexec_with_at_argv0`), or, forked
  from PID 1, to overwrite argv[0]'s first byte (:func:`mark_argv0_in_place`).
  /proc/self/comm then names the daemon for ps and top (``nbdroot-relay``,
  ``nbdroot-ktls``, ``nbdroot-lease``).
* **mlockall(MCL_CURRENT | MCL_FUTURE)**: a page fault that needs I/O from the
  very disk we serve would deadlock.
* **oom_score_adj = -1000**: the OOM killer must never pick us.
* **PR_SET_IO_FLUSHER (prctl 57, Linux >= 5.6)**: our own allocations may not
  recurse into I/O on the device we serve (the kernel sets PF_MEMALLOC_NOIO and
  PF_LOCAL_THROTTLE for us).
* **chdir("/") early, no files kept open on the served root**, and never swap on
  an NBD device (swapping to it needs the relay, which may need memory: deadlock).

Every step except the re-exec is best effort: it is logged and skipped where the
kernel or our privileges do not allow it, because refusing to boot is worse.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.libc import libc

log = logging.getLogger(__name__)

ROOT_DAEMON_ARGV0 = "@appliance-relay"
MCL_CURRENT = 1
MCL_FUTURE = 2
PR_SET_IO_FLUSHER = 57
OOM_SCORE_ADJ_MIN = -1000
THREAD_STACK = 512 * 1024
COMM_MAX = 15  # TASK_COMM_LEN - 1
# The root daemons' names in ps and top (argv, which systemd reads, keeps '@python3 ...').
RELAY_COMM = "nbdroot-relay"
KTLS_COMM = "nbdroot-ktls"
DATA_PATHS = {RELAY_COMM: "relay", KTLS_COMM: "ktls"}  # nbd.path's names, by process name
LEASE_COMM = "nbdroot-lease"


@dataclass
class HygieneReport:
    """What :func:`harden` managed to do, for logging and tests."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def argv0_is_root_daemon(argv0: str | None = None) -> bool:
    """Whether argv[0] (from /proc/self/cmdline) already starts with '@'."""
    if argv0 is None:
        raw = Path("/proc/self/cmdline").read_bytes()
        argv0 = raw.split(b"\0", 1)[0].decode(errors="replace")
    return argv0.startswith("@")


def root_daemon_command(args: Sequence[str]) -> list[str]:
    """argv that runs ``python -m appliance ARGS`` with argv[0] = '@appliance-relay'.

    Python finds its prefix, and a venv's site-packages, from argv[0]; with '@...' it
    cannot, so the site directories of this interpreter are added back explicitly
    (``site.addsitedir`` also runs their .pth files, which editable installs need).
    """
    import site  # here: PID 1 runs without it (python3 -S, image/files/init)

    dirs = [d for d in (*site.getsitepackages(), site.getusersitepackages()) if os.path.isdir(d)]
    code = ("import runpy, site, sys\n"
            f"for d in {dirs!r}:\n"
            "    site.addsitedir(d)\n"
            f"sys.argv[0] = {ROOT_DAEMON_ARGV0!r}\n"
            "runpy.run_module('appliance', run_name='__main__', alter_sys=True)\n")
    return [ROOT_DAEMON_ARGV0, "-c", code, *args]


def reexec_with_at_argv0(argv: Sequence[str] | None = None) -> None:
    """Replace this process by the same command with argv[0] = '@appliance-relay'.

    Does nothing if argv[0] already starts with '@'.  Never returns otherwise.
    """
    if argv0_is_root_daemon():
        return
    args = list(sys.argv if argv is None else argv)
    log.info("re-executing as %s so shutdown and switch_root spare us", ROOT_DAEMON_ARGV0)
    sys.stdout.flush()
    sys.stderr.flush()
    # os.execv's first argument is the program to run; argv[0] is free text.
    os.execv(sys.executable, root_daemon_command(args[1:]))


def mark_argv0_in_place() -> None:
    """Make argv[0] start with '@' without exec: overwrite its first byte in our memory.

    /proc/PID/cmdline is read from the process's own argument area (its start is field 48
    of /proc/self/stat), which /proc/self/mem may write.  Used by a child forked from the
    initramfs's PID 1, which has every module it needs loaded already: a re-exec would
    cost a second Python start-up (about 20 s under QEMU's TCG).
    """
    if argv0_is_root_daemon():
        return
    stat = Path("/proc/self/stat").read_text()
    arg_start = int(stat.rsplit(")", 1)[1].split()[45])  # field 48, counted after comm
    with open("/proc/self/mem", "r+b", buffering=0) as mem:
        mem.seek(arg_start)
        mem.write(b"@")
    if not argv0_is_root_daemon():
        raise ApplianceError("could not mark argv[0] with '@' through /proc/self/mem")


def name_process(comm: str) -> None:
    """Give this process the name ``comm`` (the kernel keeps 15 bytes); best effort."""
    try:
        with open("/proc/self/comm", "w", encoding="ascii") as f:
            f.write(comm[:COMM_MAX])
    except OSError as exc:
        log.debug("cannot name this process %r: %s", comm, exc)


def fork_root_daemon(serve: Callable[[Callable[[str], None]], None],
                     what: str = "relay", failed: str = "failed to attach",
                     comm: str = RELAY_COMM) -> tuple[int, str]:
    """Fork a root-storage daemon running ``serve(ready)``; return (pid, its ready line).

    The child starts a new session, marks argv[0] with '@' in place, takes the name
    ``comm`` (what ps and top show) and runs ``serve``, which calls ``ready(text)`` once
    it serves; the child never returns.  An ApplianceError with the child's exit status
    if it ends before it is ready.  ``what`` names the daemon in errors (the relay; the
    lease keeper), ``failed`` says what it could not do.
    """
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_fd)
        code = 1
        try:
            os.setsid()
            mark_argv0_in_place()
            name_process(comm)

            def ready(text: str) -> None:
                os.write(write_fd, f"{text}\n".encode())
                os.close(write_fd)

            serve(ready)
            code = 0
        except ApplianceError as exc:
            print(f"{what}: error: {exc}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        line = pipe.readline().strip()
    if not line:
        _, status = os.waitpid(pid, 0)
        raise ApplianceError(f"the {what} {failed} (exit status "
                             f"{os.waitstatus_to_exitcode(status)})")
    return pid, line


def lock_memory(report: HygieneReport) -> None:
    """mlockall(MCL_CURRENT | MCL_FUTURE)."""
    if libc().mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        err = ctypes.get_errno()
        report.skipped.append(f"mlockall: {os.strerror(err)}")
        log.warning("mlockall failed: %s (the relay may page-fault on its own disk)",
                    os.strerror(err))
    else:
        report.done.append("mlockall")


def protect_from_oom(report: HygieneReport, path: str = "/proc/self/oom_score_adj") -> None:
    """oom_score_adj = -1000."""
    try:
        Path(path).write_text(f"{OOM_SCORE_ADJ_MIN}\n")
        report.done.append("oom_score_adj=-1000")
    except OSError as exc:
        report.skipped.append(f"oom_score_adj: {exc.strerror}")
        log.warning("cannot set oom_score_adj: %s", exc.strerror)


def set_io_flusher(report: HygieneReport) -> None:
    """prctl(PR_SET_IO_FLUSHER, 1) where the kernel has it (Linux >= 5.6, CAP_SYS_RESOURCE)."""
    if libc().prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        report.skipped.append(f"PR_SET_IO_FLUSHER: {os.strerror(err)}")
        log.info("PR_SET_IO_FLUSHER unavailable: %s", os.strerror(err))
    else:
        report.done.append("PR_SET_IO_FLUSHER")


def nbd_swaps(swaps: str = "/proc/swaps") -> list[str]:
    """Swap areas that live on an nbd device (each one a deadlock waiting to happen)."""
    try:
        lines = Path(swaps).read_text().splitlines()[1:]
    except OSError:
        return []
    return [line.split()[0] for line in lines if line.split() and "/nbd" in line.split()[0]]


def harden(*, lock: bool = True, lock_later: bool = False) -> HygieneReport:
    """Apply every root-daemon measure this process can; return what was done.

    ``lock_later``: keep thread stacks small now, but leave mlockall to
    :func:`lock_in_background`, which a boot daemon starts once it has said it is ready.
    Locking faults in every mapped page (about a second for ~24 MiB under emulation),
    and nothing can be paged out to the served disk before the root's init enables swap.
    """
    report = HygieneReport()
    os.chdir("/")
    report.done.append("chdir /")
    if argv0_is_root_daemon():
        report.done.append("argv0 @")
    else:
        report.skipped.append("argv0 does not start with @ (not re-executed)")
    if lock:
        # Every page of every thread stack is locked (now or soon): keep the stacks small.
        threading.stack_size(THREAD_STACK)
        if not lock_later:
            lock_memory(report)
    protect_from_oom(report)
    set_io_flusher(report)
    for swap in nbd_swaps():
        log.error("swap on %s is on an NBD device: this can deadlock; swapoff it", swap)
        report.skipped.append(f"swap on {swap}")
    log.info("root-daemon hygiene: done %s; skipped %s", report.done, report.skipped)
    return report


def lock_in_background(report: HygieneReport) -> threading.Thread:
    """mlockall in a thread, for a daemon that already serves (see :func:`harden`); the
    outcome is logged and added to ``report``."""
    def lock() -> None:
        lock_memory(report)
        log.info("root-daemon hygiene: %s", "mlockall done" if "mlockall" in report.done
                 else "mlockall skipped")
    thread = threading.Thread(target=lock, name="mlockall", daemon=True)
    thread.start()
    return thread


READY_FD_ENV = "APPLIANCE_READY_FD"
DETACH_WAIT = 120.0


def spawn_detached(args: Sequence[str]) -> tuple[int, str]:
    """Run ``appliance ARGS`` as '@appliance-relay' in a new session, in ``/``.

    Returns (pid, the line the child passes to :func:`tell_ready`) once the child says
    it is ready; an ApplianceError with its exit status if it exits first.
    """
    read_fd, write_fd = os.pipe()
    env = dict(os.environ, **{READY_FD_ENV: str(write_fd)})
    try:
        proc = subprocess.Popen(root_daemon_command(list(args)), executable=sys.executable,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                pass_fds=(write_fd,), start_new_session=True, env=env,
                                cwd="/")
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd) as ready:
        line = ready.readline().strip()  # EOF when the child fails or exits
    if not line:
        code = proc.wait(DETACH_WAIT)
        raise ApplianceError(f"the background relay failed to attach (exit status {code})")
    return proc.pid, line


def tell_ready(text: str) -> None:
    """In a child of :func:`spawn_detached`: report readiness (``text``) to the parent."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    try:
        os.write(int(fd), f"{text}\n".encode())
        os.close(int(fd))
    except (OSError, ValueError):
        pass
