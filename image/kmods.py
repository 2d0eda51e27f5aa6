"""Choosing kernel modules for the initramfs: named modules plus their dependencies.

Debian's kernel package ships no ``modules.dep`` (its postinst runs depmod), so
:func:`install` runs the host's ``depmod -b`` on the unpacked tree, follows
``modules.dep`` from the names in the package list, writes those modules *decompressed*
into the initramfs tree (no xz support needed in the kernel or kmod), then runs depmod
again there so ``modprobe NAME`` works on the board.
"""

from __future__ import annotations

import logging
import lzma
import shutil
from collections.abc import Iterable
from pathlib import Path

from appliance.errors import ImageError
from image.run import run

log = logging.getLogger(__name__)

MODULES_DIR = Path("usr/lib/modules")
COPIED_INDEXES = ("modules.builtin", "modules.builtin.modinfo", "modules.order")


def kernel_version(tree: Path) -> str:
    """The one kernel version unpacked under ``tree``."""
    versions = sorted(p.name for p in (tree / MODULES_DIR).glob("*") if p.is_dir())
    if len(versions) != 1:
        raise ImageError(f"expected one kernel in {tree / MODULES_DIR}, found {versions or 'none'}")
    return versions[0]


def module_name(relpath: str) -> str:
    """The kernel's name for a module file: basename without .ko[.xz|.zst], '-' as '_'."""
    base = relpath.rsplit("/", 1)[-1].split(".ko", 1)[0]
    return base.replace("-", "_")


def read_deps(moddir: Path) -> dict[str, tuple[str, list[str]]]:
    """modules.dep as {module name: (path, [dependency paths])}."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[module_name(path)] = (path, rest.split())
    return deps


def builtin_names(moddir: Path) -> set[str]:
    """Names of modules built into the kernel (modprobe accepts these as no-ops)."""
    text = (moddir / "modules.builtin").read_text()
    return {module_name(line) for line in text.split()}


def closure(names: Iterable[str], deps: dict[str, tuple[str, list[str]]],
            builtin: set[str]) -> list[str]:
    """Module file paths needed for ``names``, dependencies included, sorted."""
    paths: set[str] = set()
    for name in names:
        key = name.replace("-", "_")
        if key in builtin:
            continue
        if key not in deps:
            raise ImageError(f"kernel module {name!r} from the package list does not exist "
                             "in this kernel (check the spelling in image/packages.txt)")
        path, requires = deps[key]
        paths.add(path)
        paths.update(requires)
    return sorted(paths)


def _decompressed(src: Path) -> bytes:
    if src.suffix == ".xz":
        return lzma.decompress(src.read_bytes())
    if src.suffix == ".ko":
        return src.read_bytes()
    raise ImageError(f"cannot decompress kernel module {src.name} (only .ko and .ko.xz)")


def _lib_link(tree: Path) -> None:
    """depmod -b looks in BASE/lib/modules; Debian (usr-merged) ships /usr/lib/modules."""
    link = tree / "lib"
    if not link.exists() and not link.is_symlink():
        link.symlink_to("usr/lib")


def install(src_tree: Path, dst_tree: Path, names: Iterable[str]) -> list[str]:
    """Copy the needed modules from ``src_tree`` to ``dst_tree``; return their names."""
    version = kernel_version(src_tree)
    src = src_tree / MODULES_DIR / version
    dst = dst_tree / MODULES_DIR / version
    _lib_link(src_tree)
    _lib_link(dst_tree)
    run(["depmod", "-b", src_tree, version])
    paths = closure(names, read_deps(src), builtin_names(src))
    for rel in paths:
        target = dst / rel.removesuffix(".xz")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_decompressed(src / rel))
    for index in COPIED_INDEXES:
        if (src / index).exists():
            shutil.copyfile(src / index, dst / index)
    run(["depmod", "-b", dst_tree, version])
    log.info("kernel modules: %s", " ".join(module_name(p) for p in paths))
    return [module_name(p) for p in paths]
