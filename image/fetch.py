"""Fetching Debian armhf packages with mmdebstrap, reusing one download cache.

:func:`extract` unpacks packages (and their dependencies) into a directory without
running any maintainer script (``--variant=extract``): it works on any host
architecture.  :func:`bootstrap` makes a configured ``minbase`` tree by running the
maintainer scripts on the host (``--mode=chrootless``); :func:`bootstrap_chroot` runs
them in the armhf tree (``--mode=root`` in :mod:`image.foreign`'s namespace, where qemu-user
runs the tree's programs), as systemd's need.  All sync the downloaded .debs with a cache directory
outside the tree, so a second build downloads only what changed.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

from image.foreign import run_armhf
from image.run import run

MIRROR = "http://deb.debian.org/debian"
ARCH = "armhf"
ARCHIVES = "/var/cache/apt/archives"


def default_cache_dir() -> Path:
    """Where downloaded .debs are kept between builds (XDG cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nbdroot-imx6" / "apt-archives"


def _mode() -> str:
    """mmdebstrap's mode for extracting: root when we are root, else a user namespace."""
    return "root" if os.geteuid() == 0 else "unshare"


def _cache_hooks(cache: Path, out_hook: str) -> list[str]:
    """Hooks copying the cache in before the download and the .debs out afterwards.

    ``out_hook`` is the phase where the .debs are still there: ``extract`` for the
    extract variant (it runs no customize hooks), ``customize`` otherwise (with
    ``--skip=essential/unlink`` so the essential packages' .debs are kept).
    """
    cache.mkdir(parents=True, exist_ok=True)
    q = shlex.quote(str(cache))
    return [
        f'--setup-hook=mkdir -p "$1"{ARCHIVES}',
        f"--setup-hook=sync-in {q} {ARCHIVES}/",
        f"--{out_hook}-hook=sync-out {ARCHIVES} {q}",
    ]


def _fresh(target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)


def extract(packages: Sequence[str], target: Path, *, suite: str, cache: Path,
            epoch: int, mirror: str = MIRROR) -> None:
    """Unpack ``packages`` and their dependencies for armhf into ``target``."""
    _fresh(target)
    run(["mmdebstrap", "--variant=extract", f"--arch={ARCH}", f"--mode={_mode()}",
         "--quiet", f"--include={','.join(packages)}", *_cache_hooks(cache, "extract"),
         suite, target, mirror],
        env={"SOURCE_DATE_EPOCH": str(epoch)})


def bootstrap(packages: Sequence[str], target: Path, *, suite: str, cache: Path,
              epoch: int, mirror: str = MIRROR) -> None:
    """A configured Debian ``minbase`` tree for armhf, plus ``packages``, in ``target``."""
    _fresh(target)
    include = [f"--include={','.join(packages)}"] if packages else []
    run(["mmdebstrap", "--variant=minbase", f"--arch={ARCH}", "--mode=chrootless",
         "--quiet", "--skip=essential/unlink", *include, *_cache_hooks(cache, "customize"),
         suite, target, mirror],
        env={"SOURCE_DATE_EPOCH": str(epoch)})


def bootstrap_chroot(packages: Sequence[str], target: Path, *, suite: str, cache: Path,
                     epoch: int, files: Path, enable: Sequence[str] = (),
                     mirror: str = MIRROR) -> None:
    """A ``minbase`` tree plus ``packages`` whose maintainer scripts ran in the tree (as
    on a board), then ``files`` copied over it and ``enable``'s systemd units enabled by
    the tree's own systemctl."""
    _fresh(target)
    hooks = [f"--customize-hook=sync-in {shlex.quote(str(files))} /"]
    if enable:
        hooks.append(f'--customize-hook=chroot "$1" systemctl enable --quiet '
                     f'{shlex.join(enable)}')
    run_armhf(["mmdebstrap", "--variant=minbase", f"--arch={ARCH}", "--mode=root", "--quiet",
               "--skip=essential/unlink", f"--include={','.join(packages)}", *hooks,
               *_cache_hooks(cache, "customize"), suite, target, mirror],
              env={"SOURCE_DATE_EPOCH": str(epoch)})
