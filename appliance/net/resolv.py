"""Writing ``<root>/etc/resolv.conf`` atomically (a power cut leaves the old or the new file)."""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)


def render(servers: Sequence[ipaddress.IPv4Address], search: Sequence[str] = ()) -> str:
    """resolv.conf text."""
    lines = ["# written by appliance net up"]
    if search:
        lines.append("search " + " ".join(search))
    lines += [f"nameserver {s}" for s in servers]
    return "\n".join(lines) + "\n"


def write(root: Path, servers: Sequence[ipaddress.IPv4Address],
          search: Sequence[str] = ()) -> Path:
    """Replace ``<root>/etc/resolv.conf``; returns its path."""
    path = root / "etc/resolv.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(render(servers, search))
        f.flush()
        os.fsync(f.fileno())
    if path.is_symlink():  # e.g. to systemd-resolved's file: replace the link, not its target
        path.unlink()
    os.replace(tmp, path)
    log.info("%s: %s", path, ", ".join(map(str, servers)) or "no servers")
    return path
