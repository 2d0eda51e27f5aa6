"""Building the boot artefacts: the steps, their order, timing and the content cache.

:func:`build` runs each step under a :class:`Steps` timer (reported through a callback,
so the CLI shows progress while library code only logs), and skips everything when the
output directory already holds artefacts made from the same inputs: the cache key
hashes the package list, the suite, the builder's own sources and the agent's sources.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import ImageError
from image import baseline, cpio, fetch, initramfs, kmods, machine_lock, rootfs, sdcard, spec

log = logging.getLogger(__name__)

IMAGE_DIR = Path(__file__).resolve().parent
REPO = IMAGE_DIR.parent
DEFAULT_EPOCH = 1735689600  # 2025-01-01T00:00:00Z, used when SOURCE_DATE_EPOCH is unset
KEY_FILE = ".build-key"
MANIFEST = "manifest.json"
KERNEL = "vmlinuz"
INITRAMFS = "initramfs.cpio.gz"
INITRAMFS_TARGET = 40 * 1024 * 1024
LOCK_TIMEOUT = 40 * 60.0

Reporter = Callable[[str], None]


@dataclass
class Options:
    """What ``appliance image build`` was asked for."""

    out: Path
    suite: str = "stable"
    cache: Path = field(default_factory=fetch.default_cache_dir)
    rootfs: bool = True
    sdcard: bool = True
    force: bool = False
    epoch: int = field(default_factory=lambda: int(os.environ.get("SOURCE_DATE_EPOCH",
                                                                  DEFAULT_EPOCH)))


class Steps:
    """Times named steps and reports ``name ... 12.3 s`` lines."""

    def __init__(self, report: Reporter) -> None:
        self.report = report
        self.times: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Run the body as one reported step."""
        self.report(f"{name} ...")
        start = time.monotonic()
        yield
        self.times[name] = round(time.monotonic() - start, 1)
        self.report(f"{name}: {self.times[name]:.1f} s")


def _source_files() -> list[Path]:
    files = [p for p in IMAGE_DIR.rglob("*") if p.is_file()]
    files += initramfs.agent_sources(REPO)
    return sorted(p for p in files if "__pycache__" not in p.parts and p.suffix != ".pyc")


def cache_key(opts: Options) -> str:
    """A hash of every input of the build (package list, suite, builder and agent)."""
    h = hashlib.sha256()
    h.update(f"suite={opts.suite} epoch={opts.epoch} rootfs={opts.rootfs} "
             f"sdcard={opts.sdcard}\n".encode())
    for path in _source_files():
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _up_to_date(opts: Options, key: str) -> bool:
    key_file, manifest = opts.out / KEY_FILE, opts.out / MANIFEST
    if opts.force or not key_file.exists() or not manifest.exists():
        return False
    if key_file.read_text().strip() != key:
        return False
    names = json.loads(manifest.read_text())["artefacts"]
    return all((opts.out / name).exists() for name in names)


def _replace(src: Path, dest: Path) -> None:
    """Copy by rename, so a QEMU starting meanwhile reads the old or the new file whole."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)


def _copy_kernel(tree: Path, out: Path, image_spec: spec.ImageSpec) -> str:
    version = kmods.kernel_version(tree)
    _replace(tree / "boot" / f"vmlinuz-{version}", out / KERNEL)
    dtb_dir = tree / "usr/lib" / f"linux-image-{version}"
    for dtb in image_spec.dtbs:
        if not (dtb_dir / dtb).exists():
            raise ImageError(f"{dtb} is not shipped by linux-image-{version} "
                             "(check [dtbs] in image/packages.txt)")
        _replace(dtb_dir / dtb, out / dtb)
    return version


def _baseline(work: Path, opts: Options, image_spec: spec.ImageSpec) -> str:
    """The anchor of ``appliance bench board``: Debian's nbd-client kernel-direct."""
    libs = baseline.assemble(work / "extract", work / "baseline", image_spec)
    log.info("baseline shared libraries: %s", " ".join(libs))
    size = cpio.write_gz(work / "baseline", opts.out / baseline.BASELINE, mtime=opts.epoch,
                         nodes=initramfs.NODES)
    log.info("baseline initramfs: %.1f MiB compressed", size / 2**20)
    return baseline.BASELINE


def _write_manifest(out: Path, info: dict[str, object], names: list[str]) -> None:
    artefacts = {}
    for name in names:
        data = (out / name).read_bytes()
        artefacts[name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    info["artefacts"] = artefacts
    (out / MANIFEST).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def _build_lock(cache: Path, report: Reporter) -> AbstractContextManager[None]:
    """One build at a time per machine: they share the download cache (and maybe DIR)."""
    return machine_lock.held(cache.parent / "build.lock", "image build", LOCK_TIMEOUT, report)


def build(opts: Options, report: Reporter) -> dict[str, object]:
    """Build every artefact into ``opts.out``; return the manifest (sizes, times)."""
    opts.out = opts.out.absolute()
    key = cache_key(opts)
    if _up_to_date(opts, key):
        return _cached(opts, key, report)
    with _build_lock(opts.cache, report):
        if _up_to_date(opts, key):  # built by the build we waited for
            return _cached(opts, key, report)
        return _build(opts, key, report)


def _cached(opts: Options, key: str, report: Reporter) -> dict[str, object]:
    report(f"up to date in {opts.out} (cache key {key[:12]})")
    info: dict[str, object] = json.loads((opts.out / MANIFEST).read_text())
    return info


def _build(opts: Options, key: str, report: Reporter) -> dict[str, object]:
    image_spec = spec.load()
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / KEY_FILE).unlink(missing_ok=True)
    work = opts.out / ".work"
    steps = Steps(report)
    with steps.step("unpack initramfs packages (mmdebstrap --variant=extract)"):
        packages = dict.fromkeys((*image_spec.initramfs_packages,
                                  *image_spec.baseline_packages))
        fetch.extract(list(packages), work / "extract", suite=opts.suite, cache=opts.cache,
                      epoch=opts.epoch)
    with steps.step("kernel and DTBs"):
        version = _copy_kernel(work / "extract", opts.out, image_spec)
    with steps.step("initramfs tree (modules, Python, agent, bytecode)"):
        initramfs.assemble(work / "extract", work / "initramfs", image_spec)
    with steps.step("initramfs archive (cpio newc + gzip)"):
        size = cpio.write_gz(work / "initramfs", opts.out / INITRAMFS, mtime=opts.epoch,
                             nodes=initramfs.NODES)
    report(f"initramfs: {size / 2**20:.1f} MiB compressed (target <= 40 MiB)")
    if size > INITRAMFS_TARGET:
        log.warning("the initramfs is larger than the 40 MiB target")
    names = [KERNEL, INITRAMFS, *image_spec.dtbs]
    if image_spec.baseline_packages:
        with steps.step("baseline initramfs (busybox, nbd-client, modules)"):
            names.append(_baseline(work, opts, image_spec))
    if opts.rootfs:
        with steps.step("root filesystem (mmdebstrap minbase + agent, mke2fs -d)"):
            names.append(rootfs.build(image_spec, work, opts.out, suite=opts.suite,
                                      cache=opts.cache, epoch=opts.epoch))
        with steps.step("Debian systemd root (mmdebstrap --mode=root under qemu-user, "
                        "mke2fs -d)"):
            names.append(rootfs.build_debian(image_spec, work, opts.out, suite=opts.suite,
                                             cache=opts.cache, epoch=opts.epoch))
    if opts.sdcard:
        with steps.step("SD card image (boot partition, boot.scr)"):
            names += sdcard.build(opts.out, image_spec, epoch=opts.epoch)
    shutil.rmtree(work)
    info = {"kernel": version, "suite": opts.suite, "source_date_epoch": opts.epoch,
            "cache_key": key, "step_seconds": steps.times}
    _write_manifest(opts.out, info, names)
    (opts.out / KEY_FILE).write_text(key + "\n")
    return info
