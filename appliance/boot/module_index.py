"""Where each module of the boot is, found at build time, so that PID 1's imports skip
the search.

An ``import`` asks each finder on ``sys.meta_path`` in turn; the path finder then tries
every ``sys.path`` entry (the agent's directory, the standard library, its
``lib-dynload``), stat-ing each directory, listing it once, then stat-ing the file and,
for a module with source, its ``.pyc``.  In the board's shell, importing the boot's
modules took 1.61-1.68 s, and 1.37-1.39 s with this index (sys time 0.53 s against
0.29 s for the whole process).

The image builder records, on the board's own Python (qemu-user, at build time, after
:func:`appliance.boot.precompiled.record` has imported the boot's modules), for each
module imported from a file with a standard loader: how it loads (bytecode, source with
its ``__pycache__`` file, or an extension module), its origin, the file its code is read
from, and whether it is a package (``module-index.marshal``, sorted).

At boot, :func:`install` puts a finder first on ``sys.meta_path`` that answers those names
with the standard loaders, reading the same files: the modules are what a normal import
makes, with the same ``__file__``, ``__cached__`` and ``__path__``.  A module with source
is loaded from its ``__pycache__`` file by the bytecode loader: the image's ``.pyc`` are
unchecked-hash ones, which the source loader does not compare with the source either.
Any other name goes on to the usual finders, and so does every name once ``/`` is no
longer the filesystem the finder was installed on: after ``switch_root``, the data path's
daemons (forks of PID 1) import from the real root as usual.  Without the file, or with a
file that does not load, nothing changes.
"""

from __future__ import annotations

import marshal
import os
import sys
from collections.abc import Mapping, Sequence
from importlib.machinery import (
    ExtensionFileLoader,
    ModuleSpec,
    SourceFileLoader,
    SourcelessFileLoader,
)
from pathlib import Path
from types import ModuleType

INDEX_FILE = Path(__file__).with_name("module-index.marshal")  # written by image/initramfs.py

BYTECODE, SOURCE, EXTENSION = "bytecode", "source", "extension"
# name -> (kind, origin, the file the code is read from, is a package)
Entry = tuple[str, str, str, bool]
KINDS: dict[type, str] = {SourcelessFileLoader: BYTECODE, SourceFileLoader: SOURCE,
                          ExtensionFileLoader: EXTENSION}


class IndexFinder:
    """A meta path finder answering the names of the index, with the standard loaders."""

    def __init__(self, index: Mapping[str, Entry], root_device: int) -> None:
        self.index = index
        self.root_device = root_device  # st_dev of / when installed: the initramfs
        self.found = 0

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        entry = self.index.get(name)
        if entry is None or os.stat("/").st_dev != self.root_device:
            return None
        kind, origin, code_file, package = entry
        loader = (ExtensionFileLoader(name, code_file) if kind == EXTENSION
                  else SourcelessFileLoader(name, code_file))
        spec = ModuleSpec(name, loader, origin=origin, is_package=package)
        spec.has_location = True
        if kind == SOURCE:
            spec.cached = code_file
        if package:
            spec.submodule_search_locations = [origin.rpartition("/")[0]]
        self.found += 1
        return spec

    def invalidate_caches(self) -> None:
        """Nothing cached: the index is fixed at build time."""


def load(path: Path = INDEX_FILE) -> dict[str, Entry] | None:
    """The index in ``path``, or None when it is missing or not what :func:`record` writes."""
    try:
        with path.open("rb") as f:
            index = marshal.load(f)  # noqa: S302 - the image's own file, as its .pyc are
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if not isinstance(index, dict) or not all(
            isinstance(k, str) and isinstance(v, tuple) and len(v) == 4
            and v[0] in (BYTECODE, SOURCE, EXTENSION) for k, v in index.items()):
        return None
    return index


def install(path: Path = INDEX_FILE) -> IndexFinder | None:
    """Put the index's finder first on ``sys.meta_path`` (None: no index, nothing changed)."""
    index = load(path)
    if index is None:
        return None
    finder = IndexFinder(index, os.stat("/").st_dev)
    sys.meta_path.insert(0, finder)
    return finder


def installed() -> IndexFinder | None:
    """The index's finder on ``sys.meta_path``, if :func:`install` put one there."""
    return next((f for f in sys.meta_path if isinstance(f, IndexFinder)), None)


def entry(module: ModuleType, root: str) -> Entry | None:
    """The index entry of an imported ``module``, its paths made relative to the system
    root ``root`` (the recording's tree; "" on the board), or None when it did not come
    from a file under ``root`` with a standard loader."""
    spec = getattr(module, "__spec__", None)  # sys.modules may hold other objects
    if spec is None or not spec.has_location or not isinstance(spec.origin, str):
        return None
    kind = KINDS.get(type(spec.loader))  # exact types: not the boot's stand-ins
    code_file = spec.cached if kind == SOURCE else spec.origin
    if kind is None or code_file is None or not Path(code_file).is_file():
        return None
    if not (spec.origin.startswith(root + "/") and code_file.startswith(root + "/")):
        return None
    return (kind, spec.origin[len(root):], code_file[len(root):],
            spec.submodule_search_locations is not None)


def record(modules: Mapping[str, ModuleType] | None = None, root: str | None = None) -> bytes:
    """The marshalled index of ``modules`` (default: every module imported so far) under
    the system root ``root`` (default: ``sys.prefix`` without its ``/usr``)."""
    modules = dict(sys.modules if modules is None else modules)
    root = sys.prefix.removesuffix("/usr") if root is None else root
    index = {name: e for name, module in sorted(modules.items())
             if (e := entry(module, root)) is not None}
    return marshal.dumps(index)
