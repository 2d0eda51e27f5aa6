"""Running an armhf tree's own programs on this host: a user namespace with qemu-user binfmt.

systemd's maintainer scripts cannot run ``--mode=chrootless`` (the host's tools are older
than the tree's: the host's systemd-sysusers refuses trixie's sysusers.d), so the
systemd root is made with ``mmdebstrap --mode=root``, whose chroot runs armhf binaries.
Instead of registering qemu-arm with the host's binfmt_misc (a machine-wide setting),
:func:`run_armhf` runs the tool in new user, mount and PID namespaces with their own
binfmt_misc instance (Linux 6.7 and later), holding the qemu-user-static registration
from ``/usr/lib/binfmt.d``.  The user namespace maps every ID to itself (written by this
process, which is root outside), so the tree's files get their real owners; mmdebstrap
bind-mounts /dev's nodes where ``mknod`` is refused.
"""

from __future__ import annotations

import os
import select
from collections.abc import Mapping, Sequence
from pathlib import Path

from appliance.errors import ImageError
from image.run import Completed, run

BINFMT = Path("/usr/lib/binfmt.d/qemu-arm.conf")  # qemu-user-static
HANDSHAKE_S = 30.0
# $1 ready fd, $2 go fd, $3 the binfmt registration, then the command.  The pipes are
# opened by path: dash's ">&N" takes one digit, and a process with many files open (a
# test run) gets descriptors past 9.
SCRIPT = r"""
echo ready > "/proc/self/fd/$1"
read -r _ < "/proc/self/fd/$2" || exit 111
mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || exit 112
printf '%s' "$3" > /proc/sys/fs/binfmt_misc/register || exit 113
shift 3
"$@"
"""


def registration(conf: Path = BINFMT) -> str:
    """The binfmt_misc registration line for armhf ELF binaries (qemu-user-static's)."""
    if os.geteuid() != 0:
        raise ImageError("the systemd root is built as root (a user namespace mapping "
                         "every ID): run `appliance image build` as root")
    try:
        return conf.read_text().strip()
    except OSError:
        raise ImageError(f"{conf} is missing: install the Debian package qemu-user-static "
                         "(./setup.sh test installs everything)") from None


class _Handshake:
    """The ``started`` step: wait for the child's namespace, map its IDs 1:1, let it go on."""

    def __init__(self) -> None:
        self.ready_r, self.ready_w = os.pipe()
        self.go_r, self.go_w = os.pipe()
        self.child_fds = (self.ready_w, self.go_r)
        self.fds = [self.ready_r, self.ready_w, self.go_r, self.go_w]

    def __call__(self, pid: int) -> None:
        for fd in self.child_fds:  # the child has them: a child dying early reads as EOF
            os.close(fd)
            self.fds.remove(fd)
        readable, _, _ = select.select([self.ready_r], [], [], HANDSHAKE_S)
        if not readable or not os.read(self.ready_r, 16):
            raise ImageError("the user namespace for the armhf chroot did not start "
                             "(unshare failed)")
        for name in ("uid_map", "gid_map"):
            Path(f"/proc/{pid}/{name}").write_text("0 0 4294967295\n")
        os.write(self.go_w, b"go\n")

    def close(self) -> None:
        """Close this side's descriptors."""
        for fd in self.fds:
            os.close(fd)
        self.fds = []


def run_armhf(argv: Sequence[str | Path], *, env: Mapping[str, str] | None = None,
              timeout: float = 3600.0) -> Completed:
    """Run ``argv`` as root of a namespace where armhf binaries run through qemu-arm."""
    line = registration()
    shake = _Handshake()
    try:
        # --kill-child: when unshare ends (run() kills it on a timeout or an interrupt),
        # the namespace's init is killed, and with it everything the namespace runs.
        # Without it, mmdebstrap outlived an interrupted build, re-parented to PID 1, and
        # run() waited for it on the pipes it still held.  SCRIPT runs the command as a
        # child, not by exec: an exec after the ID mapping gains capabilities, and the
        # kernel then clears the parent-death signal that --kill-child set.
        unshare = ["unshare", "--user", "--mount", "--pid", "--fork", "--kill-child",
                   "--propagation", "private", "--", "sh", "-c", SCRIPT, "sh",
                   str(shake.ready_w), str(shake.go_r), line, *(str(a) for a in argv)]
        return run(unshare, env=env, timeout=timeout, pass_fds=shake.child_fds,
                   started=shake)
    finally:
        shake.close()
