"""Download Debian packages for another architecture, without root, into a cache.

Owns one thing: getting ``.deb`` files (e.g. Debian trixie's armhf kernel) onto an
amd64 host.  It runs the real ``apt-get`` with a private configuration directory
(``APT_CONFIG`` -> its own ``sources.list``, ``APT::Architecture``, lists, archives
and an empty dpkg status), so the host's apt state is never touched and no root is
needed.  Downloaded files are kept in a cache directory
(``$XDG_CACHE_HOME/nbdroot-imx6/debs``, default ``~/.cache/...``); a package already
there is not fetched again, so the second run works offline.

Used only by tests: the board tests (Debian's real DTBs, kernel modules and
busybox-static) and the extended-headers interop tests (qemu-nbd 10 from
bookworm-backports, since the host's qemu-utils stays 7.2).  The image builder gets its
packages through mmdebstrap (:mod:`image.fetch`).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from appliance.errors import ImageError
from image import machine_lock

log = logging.getLogger(__name__)

DEFAULT_MIRROR = "http://deb.debian.org/debian"
# The suite "stable" resolves consistently even while the "trixie" index is mid-sync.
DEFAULT_SUITE = "stable"
DEFAULT_ARCH = "armhf"
TIMEOUT_S = 900
FETCH_LOCK_S = 2 * TIMEOUT_S  # another fetch: its update and download, each bounded


def cache_dir() -> Path:
    """The per-user cache for downloaded packages (created if missing)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    path = Path(base) / "nbdroot-imx6" / "debs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(argv: Sequence[str], env: dict[str, str], cwd: Path | None = None) -> str:
    log.debug("+ %s", " ".join(argv))
    try:
        proc = subprocess.run(list(argv), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except FileNotFoundError as exc:
        raise ImageError(f"{argv[0]} not found: install apt (Debian/Ubuntu host)") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"{argv[0]} {argv[1]} timed out after {TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ImageError(f"{' '.join(argv[:2])} failed (exit {proc.returncode}): {last}")
    return proc.stdout


class AptFetcher:
    """apt-get with a private state directory for one mirror/suite/architecture."""

    def __init__(self, *, suite: str = DEFAULT_SUITE, arch: str = DEFAULT_ARCH,
                 mirror: str = DEFAULT_MIRROR, cache: Path | None = None) -> None:
        self.suite, self.arch, self.mirror = suite, arch, mirror
        self.cache = cache if cache is not None else cache_dir()
        self.state = self.cache / f"apt-{suite}-{arch}"
        self._updated = False

    def _config(self) -> dict[str, str]:
        s = self.state
        for sub in ("etc/apt/sources.list.d", "etc/apt/preferences.d", "etc/apt/trusted.gpg.d",
                    "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg"):
            (s / sub).mkdir(parents=True, exist_ok=True)
        (s / "var/lib/dpkg/status").touch()
        (s / "etc/apt/sources.list").write_text(
            f"deb [arch={self.arch}] {self.mirror} {self.suite} main\n")
        conf = s / "apt.conf"
        lines = [
            f'APT::Architecture "{self.arch}";',
            f'APT::Architectures {{ "{self.arch}"; }};',
            f'Dir "{s}/";',
            'Dir::Etc "etc/apt/";',
            'Dir::State "var/lib/apt/";',
            'Dir::State::status "var/lib/dpkg/status";',
            'Dir::Cache "var/cache/apt/";',
            # The host's keyring verifies Debian's signatures.
            'Dir::Etc::TrustedParts "/etc/apt/trusted.gpg.d/";',
            'Acquire::Languages "none";',
        ]
        if os.geteuid() == 0:  # apt's _apt sandbox user could not write into this cache
            lines.append('APT::Sandbox::User "root";')
        conf.write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("APT_")}
        env["APT_CONFIG"] = str(conf)
        env["LC_ALL"] = "C"
        return env

    def update(self) -> None:
        """Fetch the package index (once per fetcher)."""
        if not self._updated:
            log.info("apt-get update (%s %s %s)", self.mirror, self.suite, self.arch)
            _run(["apt-get", "-q", "update"], self._config())
            self._updated = True

    def resolve(self, pattern: str) -> str:
        """The newest package whose whole name matches the regular expression ``pattern``.

        E.g. ``r"linux-image-6\\.12\\.[0-9]+\\+deb13-armmp"`` (a glob would also match -rt-).
        """
        self.update()
        prefix = re.split(r"[\\\[.*+?(|{]", pattern, maxsplit=1)[0]
        names = _run(["apt-cache", "pkgnames", prefix], self._config()).split()
        found = sorted((n for n in names if re.fullmatch(pattern, n)), key=_natural)
        if not found:
            raise ImageError(f"no package matches {pattern!r} in {self.suite}/{self.arch}")
        return found[-1]

    def cached(self, pattern: str) -> Path | None:
        """The newest ``.deb`` in the cache whose package name matches ``pattern``."""
        debs = [p for p in self.cache.glob("*.deb")
                if re.fullmatch(pattern, p.name.split("_", 1)[0])
                and p.name.endswith((f"_{self.arch}.deb", "_all.deb"))]
        return max(debs, key=lambda p: _natural(p.name)) if debs else None

    def fetch(self, pattern: str) -> Path:
        """The ``.deb`` of the newest package matching ``pattern``, from the cache if there.

        Fetches share the cache and apt's state directory: one at a time per machine."""
        with machine_lock.held(self.cache / "fetch.lock", "package download", FETCH_LOCK_S):
            return self._fetch(pattern)

    def _fetch(self, pattern: str) -> Path:
        hit = self.cached(pattern)
        if hit is not None:
            log.debug("cached: %s", hit)
            return hit
        name = self.resolve(pattern)
        log.info("downloading %s", name)
        _run(["apt-get", "-q", "download", name], self._config(), cwd=self.cache)
        hit = self.cached(re.escape(name))
        if hit is None:
            raise ImageError(f"apt-get download {name} left no .deb in {self.cache}")
        return hit


def _natural(text: str) -> list[int | str]:
    """Sort key putting 6.12.9 before 6.12.10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def extract(deb: Path, dest: Path, members: Sequence[str] = ()) -> Path:
    """Unpack ``deb``'s files (all, or the tar glob ``members``) under ``dest``; no root needed."""
    dest.mkdir(parents=True, exist_ok=True)
    log.debug("+ dpkg-deb --fsys-tarfile %s | tar -x -C %s", deb, dest)
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                          stdout=subprocess.PIPE, stdin=subprocess.DEVNULL) as dpkg:
        tar = subprocess.run(["tar", "-x", "-C", str(dest), "--wildcards", "--no-same-owner",
                              *members], stdin=dpkg.stdout, capture_output=True, text=True,
                             timeout=TIMEOUT_S, check=False)
        dpkg_rc = dpkg.wait(timeout=TIMEOUT_S)
    if dpkg_rc != 0 or tar.returncode != 0:
        raise ImageError(f"unpacking {deb.name} failed: {tar.stderr.strip() or dpkg_rc}")
    return dest
