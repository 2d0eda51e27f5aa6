"""Fixtures: a fake board tree, and Debian trixie's REAL armhf kernel package (cached).

``armmp`` downloads ``linux-image-6.12.*-armmp`` from the suite ``stable`` with
:mod:`image.debfetch` (private apt config, no root), unpacks it once into the cache
next to the .deb and runs ``depmod`` on it, so later runs need no network.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.errors import ImageError
from image import debfetch, machine_lock

KERNEL_PACKAGE = r"linux-image-6\.12\.[0-9]+\+deb13-armmp"


@dataclass(frozen=True)
class KernelTree:
    root: Path  # the unpacked package
    release: str  # 6.12.NN+deb13-armmp

    @property
    def usr(self) -> Path:
        """modprobe -d base (Debian ships modules in /usr/lib/modules)."""
        return self.root / "usr"

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    def dtb(self, name: str) -> Path:
        return self.root / "usr/lib" / f"linux-image-{self.release}" / name


def _unpack(deb: Path) -> KernelTree:
    dest = deb.parent / "unpacked" / deb.stem
    stamp = dest / ".complete-2"  # bump when the member list changes
    with machine_lock.held(deb.parent / "unpack.lock", "kernel unpack", 600):  # test workers
        if not stamp.exists():
            debfetch.extract(deb, dest, ["./boot/vmlinuz-*", "./usr/lib/modules/*",
                                          "./usr/lib/linux-image-*/imx6*"])
            (release,) = (p.name for p in (dest / "usr/lib/modules").iterdir())
            subprocess.run(["depmod", "-b", str(dest / "usr"), release], check=True,
                           timeout=300)
            stamp.write_text(release)
    return KernelTree(dest, stamp.read_text())


def fetch_or_skip(pattern: str) -> Path:
    """The cached or downloaded .deb; skip (naming the reason) when it cannot be fetched."""
    try:
        return debfetch.AptFetcher().fetch(pattern)
    except ImageError as exc:
        pytest.skip(f"cannot fetch Debian armhf package {pattern} (network?): {exc}")


@pytest.fixture(scope="session")
def armmp() -> KernelTree:
    return _unpack(fetch_or_skip(KERNEL_PACKAGE))


@pytest.fixture
def sabrelite_dtb(armmp: KernelTree, tmp_path: Path) -> Path:
    """A private copy of the real imx6q-sabrelite.dtb."""
    copy = tmp_path / "imx6q-sabrelite.dtb"
    copy.write_bytes(armmp.dtb("imx6q-sabrelite.dtb").read_bytes())
    return copy


@pytest.fixture
def evk_dtb(armmp: KernelTree, tmp_path: Path) -> Path:
    """A private copy of the real imx6ul-14x14-evk.dtb."""
    copy = tmp_path / "imx6ul-14x14-evk.dtb"
    copy.write_bytes(armmp.dtb("imx6ul-14x14-evk.dtb").read_bytes())
    return copy
