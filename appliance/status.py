"""What the booted system reports about its NBD root: device, relay process, boot timeline.

Read on the running root (``appliance status``): the device mounted on ``/`` (from
/proc/self/mounts), the PID the kernel records for it (/sys/block/nbdN/pid, the relay
or kTLS supervisor that attached it), whether that process lives and runs as a
root-storage daemon (argv[0] starting with '@'), which data path it is (its name), the
DHCP lease keeper's state (/run/nbdroot/lease.json, written by
:mod:`appliance.net.keeper`), and the boot timeline the initramfs left in /run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TIMELINE = Path("/run/nbdroot/timeline.json")
LEASE = Path("/run/nbdroot/lease.json")


@dataclass(frozen=True)
class RootStatus:
    """The root device and the relay serving it."""

    device: str | None
    relay_pid: int | None
    relay_alive: bool
    relay_argv0: str | None
    relay_comm: str | None = None  # the data path's process name (appliance.daemon)

    @property
    def path(self) -> str:
        """The data path serving the root: ``ktls`` (the kernel reads the socket; this is
        its supervisor), ``relay``, or the process's own name for anything else."""
        from appliance.daemon import DATA_PATHS

        return DATA_PATHS.get(self.relay_comm or "", self.relay_comm or "-")

    @property
    def ok(self) -> bool:
        """Root on an nbd device with a live '@' relay."""
        return bool(self.device and "/nbd" in self.device and self.relay_alive
                    and (self.relay_argv0 or "").startswith("@"))

    def line(self) -> str:
        """One console line a script (``appliance demo --check``) can match."""
        state = "alive" if self.relay_alive else "dead"
        return (f"nbdroot-status: root={self.device or 'unknown'} relay={state} "
                f"pid={self.relay_pid or 0} argv0={self.relay_argv0 or '-'} path={self.path}")


OVERLAY_LOWER = "/run/nbdroot/lower"  # root.mode=overlay: where the boot mounts the export


def root_device(mounts: Path = Path("/proc/self/mounts")) -> str | None:
    """The device mounted on / (the last such mount wins, as the kernel stacks them); for
    an overlay root (root.mode=overlay), the read-only device below it."""
    found: dict[str, str] = {}
    for line in mounts.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 2:
            found[fields[1]] = fields[0]
    device = found.get("/")
    if device == "overlay":
        return found.get(OVERLAY_LOWER, device)
    return device


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def collect(root: Path = Path("/")) -> RootStatus:
    """The status of this system's root (``root`` lets tests point at a tree)."""
    device = root_device(root / "proc/self/mounts")
    pid_text = _read(root / "sys/block" / Path(device or "none").name / "pid")
    pid = int(pid_text) if pid_text and pid_text.isdigit() else None
    argv0 = comm = None
    if pid is not None:
        cmdline = _read(root / f"proc/{pid}/cmdline")
        argv0 = cmdline.split("\0", 1)[0] if cmdline else None
        comm = _read(root / f"proc/{pid}/comm")
    alive = pid is not None and argv0 is not None
    return RootStatus(device, pid, alive, argv0, comm)


def timeline(path: Path = TIMELINE) -> list[dict[str, object]]:
    """The initramfs's boot steps, or [] when none were kept."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []



@dataclass(frozen=True)
class LeaseStatus:
    """The lease keeper's last state and whether it still runs as a root-storage daemon."""

    state: dict[str, object]
    alive: bool
    argv0: str | None

    def line(self, now: float) -> str:
        """``nbdroot-lease: eth0 10.0.2.15/24 state=bound keeper=alive pid=N argv0=@... ...``"""
        s = self.state

        def ago(key: str) -> str:
            t = s.get(key)
            return f"{now - t:.0f}s-ago" if isinstance(t, (int, float)) else "never"

        expires = s.get("expires")
        left = f"{expires - now:.0f}s" if isinstance(expires, (int, float)) else "?"
        line = (f"nbdroot-lease: {s.get('iface', '?')} {s.get('address', '?')} "
                f"state={s.get('state', '?')} keeper={'alive' if self.alive else 'dead'} "
                f"pid={s.get('pid', 0)} argv0={self.argv0 or '-'} server={s.get('server') or '-'} "
                f"lease={s.get('lease_s', '?')}s renewals={s.get('renewals', 0)} "
                f"last-renewal={ago('last_renewal')} expires-in={left}")
        return line + (f" warning={s['warning']!r}" if s.get("warning") else "")


def lease(root: Path = Path("/")) -> LeaseStatus | None:
    """The lease keeper's status, or None when there is none (a static address)."""
    try:
        state = json.loads((root / str(LEASE).lstrip("/")).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict):
        return None
    pid = state.get("pid")
    cmdline = _read(root / f"proc/{pid}/cmdline") if isinstance(pid, int) else None
    argv0 = cmdline.split("\0", 1)[0] if cmdline else None
    return LeaseStatus(state, argv0 is not None, argv0)
