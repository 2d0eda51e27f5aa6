"""Assembling the initramfs tree from unpacked Debian packages.

The tree keeps only what the board's first stage runs: busybox, kmod, Python 3.13 with
the standard library minus what a headless agent never imports (tests, IDLE, tkinter,
ensurepip, CJK codecs ...), Debian's python3-pyroute2 / -netifaces / -libfdt, the agent
packages ``appliance`` and ``board`` from the checkout, the kernel modules named in the
package list, and exactly the shared libraries those programs and
extension modules need (found by following DT_NEEDED).  All Python is precompiled to
unchecked-hash bytecode: under QEMU's TCG this makes imports about five times faster;
only the agent keeps its sources (:func:`precompile`).
"""

from __future__ import annotations

import compileall
import logging
import os
import py_compile
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from appliance.errors import ImageError
from image import elf, kmods
from image.cpio import Node
from image.run import run, which
from image.spec import ImageSpec

log = logging.getLogger(__name__)

FILES = Path(__file__).with_name("files")
REPO = Path(__file__).resolve().parent.parent
AGENT_PACKAGES = ("appliance", "board")
# The host layer (demo, test servers, benchmarks, host tools) never goes to the board.
HOST_ONLY = ("appliance/host",)
PY = "python3.13"
STDLIB = Path("usr/lib") / PY
DIST = Path("usr/lib/python3/dist-packages")
LIBDIRS = (Path("usr/lib/arm-linux-gnueabihf"), Path("usr/lib"))
PROGRAMS = ("usr/bin/busybox", "usr/bin/kmod", f"usr/bin/{PY}")
KMOD_LINKS = ("modprobe", "insmod", "rmmod", "lsmod", "depmod", "modinfo")
# The CJK codecs (1 MiB with their C modules): the board speaks ASCII and UTF-8.
CJK_CODECS = tuple(f"encodings/{name}*" for name in (
    "big5", "cp932", "cp949", "cp950", "euc_", "gb", "hz", "iso2022_", "johab", "shift_jis"))
# Standard library parts a headless agent never imports.  (sqlite3 stays: a whole
# ``import pyroute2``, as ``appliance`` commands on the board do, imports pyroute2.ndb,
# which imports sqlite3.)  Debian's sitecustomize.py only tries to import apport, which
# costs 67 ms at every start under qemu-user.
STDLIB_PRUNE = ("sitecustomize.py", "test", "idlelib", "tkinter", "turtledemo", "ensurepip",
                "lib2to3", "pydoc_data", "venv", "curses", "turtle.py", "antigravity.py",
                "this.py", "__phello__", "__hello__.py", "EXTERNALLY-MANAGED", "LICENSE.txt",
                *CJK_CODECS)
# Debian packages' optional parts nothing on the board imports: psutil (pyroute2's ss2
# tool tries it), bcrypt (if a dependency brings it), pyroute2's old module name.
DIST_PRUNE = ("psutil", "psutil-*.dist-info", "bcrypt", "bcrypt-*.dist-info", "pr2modules")
DYNLOAD_PRUNE = ("_test", "xx", "_ctypes_test", "_curses", "_dbm", "_gdbm",
                 "_tkinter", "readline", "_interp", "_codecs_", "_multibytecodec",
                 "_xxtestfuzz")
NODES = (Node("dev/console", stat.S_IFCHR | 0o600, 5, 1),
         Node("dev/null", stat.S_IFCHR | 0o666, 1, 3))
DIRS = ("dev", "proc", "sys", "run", "tmp", "mnt", "root", "etc/appliance", "usr/sbin")


def _resolve(tree: Path, path: Path) -> Path:
    """Follow symlinks inside ``tree`` as the target system would (absolute = tree root)."""
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = Path(os.readlink(path))
        path = tree / target.relative_to("/") if target.is_absolute() else path.parent / target
    raise ImageError(f"symlink loop at {path}")


def copy_from_tree(src_tree: Path, dst_tree: Path, rel: Path) -> None:
    """Copy ``rel`` from ``src_tree`` to ``dst_tree``, symlinks followed inside the tree."""
    src = _resolve(src_tree, src_tree / rel)
    dst = dst_tree / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def _prune(base: Path, names: Iterable[str], prefixes: Iterable[str] = ()) -> None:
    """Remove ``names`` (glob patterns) under ``base``, the lib-dynload modules starting
    with ``prefixes``, and every ``__pycache__``."""
    for pattern in names:
        for victim in sorted(base.glob(pattern)):
            if victim.is_dir() and not victim.is_symlink():
                shutil.rmtree(victim)
            else:
                victim.unlink()
    for victim in sorted(base.glob("lib-dynload/*")):
        if victim.name.startswith(tuple(prefixes)):
            victim.unlink()
    for cache in sorted(base.rglob("__pycache__")):
        shutil.rmtree(cache)


def _find_lib(src_tree: Path, soname: str) -> Path:
    for libdir in LIBDIRS:
        candidate = src_tree / libdir / soname
        if candidate.exists():
            return _resolve(src_tree, candidate)
    raise ImageError(f"shared library {soname} not found in the unpacked packages "
                     "(add the Debian package that ships it to image/packages.txt)")


def add_libraries(src_tree: Path, dst_tree: Path) -> list[str]:
    """Copy every shared library the ELF files in ``dst_tree`` need, transitively."""
    pending = [p for p in sorted(dst_tree.rglob("*")) if elf.is_elf(p)]
    done: set[str] = set()
    (dst_tree / LIBDIRS[0]).mkdir(parents=True, exist_ok=True)
    while pending:
        for soname in elf.needed(pending.pop()):
            if soname in done:
                continue
            done.add(soname)
            dst = dst_tree / LIBDIRS[0] / soname
            shutil.copy2(_find_lib(src_tree, soname), dst)
            pending.append(dst)
    loader = dst_tree / "usr/lib/ld-linux-armhf.so.3"
    loader.symlink_to("arm-linux-gnueabihf/ld-linux-armhf.so.3")
    return sorted(done)


def add_python(src_tree: Path, dst_tree: Path) -> None:
    """Python 3.13, a pruned standard library, and the Debian Python packages."""
    copy_from_tree(src_tree, dst_tree, STDLIB)
    copy_from_tree(src_tree, dst_tree, DIST)
    _prune(dst_tree / STDLIB, STDLIB_PRUNE, DYNLOAD_PRUNE)
    _prune(dst_tree / DIST, DIST_PRUNE)
    (dst_tree / "usr/bin/python3").symlink_to(PY)


def add_agent(dst_tree: Path, repo: Path = REPO) -> None:
    """The agent packages, copied from the checkout (sources and data, no caches)."""
    for name in AGENT_PACKAGES:
        src = repo / name
        if not (src / "__init__.py").exists():
            raise ImageError(f"agent package {src} is missing its __init__.py")
        shutil.copytree(src, dst_tree / DIST / name, ignore=_not_for_the_board(repo))


def _not_for_the_board(repo: Path) -> Callable[[str, list[str]], set[str]]:
    """A copytree ``ignore``: caches, and the host layer."""
    host = {repo / rel for rel in HOST_ONLY}
    caches = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")

    def ignore(directory: str, names: list[str]) -> set[str]:
        here = Path(directory)
        return set(caches(directory, names)) | {n for n in names if here / n in host}
    return ignore


def agent_sources(repo: Path = REPO) -> list[Path]:
    """The board layer's files in the checkout: what :func:`add_agent` puts on the board."""
    host = tuple(repo / rel for rel in HOST_ONLY)
    files = [p for name in AGENT_PACKAGES for p in (repo / name).rglob("*") if p.is_file()]
    return [p for p in files if not any(p.is_relative_to(h) for h in host)]


def precompile(dst_tree: Path) -> None:
    """Compile every .py to unchecked-hash bytecode, with target paths in tracebacks.

    The agent keeps its sources (``__pycache__`` beside them: its tracebacks show the
    line).  The standard library and the Debian packages go sourceless, each ``.pyc``
    where its ``.py`` was, as Buildroot's "precompiled only" images do: their sources
    were 15 MiB of the 51 MiB the kernel unpacks at every boot, seconds under emulation.
    A file that does not compile keeps its source.
    """
    if sys.version_info[:2] != (3, 13):
        raise ImageError("the image's bytecode must be compiled by Python 3.13 "
                         f"(this is {sys.version.split()[0]}): run the builder from .venv")
    mode = py_compile.PycInvalidationMode.UNCHECKED_HASH
    agent = [dst_tree / DIST / name for name in AGENT_PACKAGES]
    agent_rx = re.compile("|".join(re.escape(f"/{DIST / name}/") for name in AGENT_PACKAGES))
    for rel in (STDLIB, DIST):
        ok = compileall.compile_dir(dst_tree / rel, ddir=f"/{rel}", quiet=2, legacy=True,
                                    rx=agent_rx, invalidation_mode=mode,
                                    workers=os.cpu_count() or 1)
        if not ok:
            log.warning("some files under /%s did not compile (kept as source)", rel)
        _drop_compiled_sources(dst_tree / rel, agent)
    for package in agent:
        compileall.compile_dir(package, ddir=f"/{package.relative_to(dst_tree)}", quiet=2,
                               invalidation_mode=mode, workers=os.cpu_count() or 1)
        missing = [p for p in package.rglob("*.py")
                   if not (p.parent / "__pycache__" / f"{p.stem}.cpython-313.pyc").exists()]
        if missing:
            raise ImageError(f"agent source did not compile: {missing[0]}")


def record_boot_imports(dst_tree: Path) -> int:
    """Run :mod:`appliance.boot.record` on the board's own Python (under qemu-user): the
    boot's dataclass, namedtuple and pattern code, compiled, and the index of where its
    modules are, beside :mod:`appliance.boot.precompiled`; their size in bytes."""
    from appliance.boot.module_index import INDEX_FILE
    from appliance.boot.precompiled import CODE_FILE

    dest = dst_tree / DIST / "appliance/boot"
    qemu = which("qemu-arm-static")
    # -B: nothing written into the tree's __pycache__; a fixed hash seed for the same bytes
    run([qemu, "-L", dst_tree, dst_tree / "usr/bin" / PY, "-B", "-s", "-m",
         "appliance.boot.record", dest], env={"PYTHONHASHSEED": "0"}, cwd=dst_tree,
        timeout=600)
    size = sum((dest / name).stat().st_size for name in (CODE_FILE.name, INDEX_FILE.name))
    log.info("compiled code and module index for the boot: %d bytes", size)
    return size


def _drop_compiled_sources(base: Path, keep: list[Path]) -> None:
    """Remove each .py under ``base`` that has its .pyc beside it, except under ``keep``."""
    for source in sorted(base.rglob("*.py")):
        if source.with_suffix(".pyc").exists() and not any(
                source.is_relative_to(k) for k in keep):
            source.unlink()


def add_base(src_tree: Path, dst_tree: Path, spec: ImageSpec) -> None:
    """Programs, directories, symlinks, /init and configuration files."""
    for rel in DIRS:
        (dst_tree / rel).mkdir(parents=True, exist_ok=True)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        if not (dst_tree / link).is_symlink():
            (dst_tree / link).symlink_to(target)
    for rel in PROGRAMS:
        copy_from_tree(src_tree, dst_tree, Path(rel))
    (dst_tree / "usr/bin/sh").symlink_to("busybox")
    for name in KMOD_LINKS:
        (dst_tree / "usr/sbin" / name).symlink_to("../bin/kmod")
    shutil.copy2(FILES / "init", dst_tree / "init")
    udhcpc = dst_tree / "usr/share/udhcpc/default.script"
    udhcpc.parent.mkdir(parents=True)
    shutil.copy2(FILES / "udhcpc.script", udhcpc)
    (dst_tree / "etc/appliance/modules.load").write_text("\n".join(spec.modules) + "\n")
    (dst_tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (dst_tree / "etc/group").write_text("root:x:0:\n")
    (dst_tree / "etc/hostname").write_text("nbdroot\n")
    # Its mtime (SOURCE_DATE_EPOCH, as for every entry) is the clock's floor at boot
    # (appliance.boot.clock, as systemd's /usr/lib/clock-epoch).
    clock_epoch = dst_tree / "usr/lib/clock-epoch"
    clock_epoch.parent.mkdir(parents=True, exist_ok=True)
    clock_epoch.touch()


def assemble(src_tree: Path, dst_tree: Path, spec: ImageSpec) -> None:
    """Build the initramfs tree in ``dst_tree`` (emptied first) from ``src_tree``."""
    if dst_tree.exists():
        shutil.rmtree(dst_tree)
    dst_tree.mkdir(parents=True)
    add_base(src_tree, dst_tree, spec)
    kmods.install(src_tree, dst_tree, spec.modules)
    add_python(src_tree, dst_tree)
    add_agent(dst_tree)
    libs = add_libraries(src_tree, dst_tree)
    log.info("shared libraries: %s", " ".join(libs))
    precompile(dst_tree)
    record_boot_imports(dst_tree)
