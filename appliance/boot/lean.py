"""Importing pyroute2 without its package ``__init__`` and its mock lab, for the boot
path (PID 1).

``import pyroute2.netlink`` (or any submodule) first runs ``pyroute2/__init__.py``, and
pyroute2 0.7's runs NDB (sqlite3), the CLI server (http.server), psutil and the test
lab: measured with ``-X importtime`` under qemu-user on the image's own Python, 1.46 s
for ``from pyroute2 import IPRoute`` against 0.69 s for the same class taken from
``pyroute2.iproute.linux`` with the package ``__init__`` skipped.  The boot needs only
netlink sockets (``pyroute2.iproute.linux.IPRoute``, ``pyroute2.netlink.generic``), so
PID 1 registers the package as an empty module with the package's own search path;
submodules then import as usual.

``pyroute2.iproute.linux`` also imports ``pyroute2.lab``, the mock lab of pyroute2's
documentation, for one mixin of ``IPRoute``: with ``use_mock`` False (its value unless the
docs' lab sets it) ``LAB_API`` adds nothing to the class, but the module imports
``unittest.mock`` and with it asyncio: 1.08 s of the boot's imports under QEMU's TCG
(``PYTHONPROFILEIMPORTTIME=1`` on the kernel command line).  PID 1 registers a module whose
``LAB_API`` is that empty mixin.

Everything else (the host, ``appliance`` commands on the board) imports pyroute2 whole.
"""

from __future__ import annotations

import importlib.util
import sys
import types

PACKAGE = "pyroute2"
LAB = "pyroute2.lab"


class LAB_API:
    """``pyroute2.lab.LAB_API`` with ``use_mock`` False: a mixin that adds nothing."""


def lean_pyroute2() -> bool:
    """Register pyroute2 as a package whose ``__init__`` never runs, and its lab without
    the mock; True if it did so (False: already imported, or not installed -- the normal
    import then says why)."""
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        return False
    lab = types.ModuleType(LAB, "pyroute2.lab without its mock (appliance.boot.lean)")
    lab.LAB_API = LAB_API  # type: ignore[attr-defined]
    lab.use_mock = False  # type: ignore[attr-defined]
    lab.registry = []  # type: ignore[attr-defined]
    sys.modules.setdefault(LAB, lab)
    sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)  # not executed
    return True
