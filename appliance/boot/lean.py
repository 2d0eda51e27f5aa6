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

Two more modules are answered by PID 1's import system (:class:`StandIns`):

* ``pyroute2.netlink.rtnl.tcmsg``, traffic control: the message class of qdiscs, classes
  and filters, and the 22 scheduler and classifier plugins it imports, which the boot
  never asks for.  ``iproute.linux`` and the rtnetlink marshal import it for the class;
  the stand-in has the class, with pyroute2's header and attribute names (attribute values
  left undecoded), and no plugins: ~40 of the 90 pyroute2 modules the boot imported.
* ``pyroute2.config``, pyroute2's settings: the same values, but ``uname`` from
  ``os.uname()`` and ``arch`` from the pointer size, where pyroute2's imports
  ``multiprocessing`` and ``platform`` and runs ``uname -p`` and ``file`` in subprocesses;
  the multiprocessing names are imported only when used.

Together ~1.5 s of the network step's imports under TCG (``PYTHONPROFILEIMPORTTIME=1``).
A test holds the stand-ins to pyroute2's own modules.

Everything else (the host, ``appliance`` commands on the board) imports pyroute2 whole.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from importlib.abc import Loader

PACKAGE = "pyroute2"
LAB = "pyroute2.lab"
TCMSG = "pyroute2.netlink.rtnl.tcmsg"
CONFIG = "pyroute2.config"


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
    sys.meta_path.insert(0, StandIns(spec.submodule_search_locations))
    sys.modules[PACKAGE] = importlib.util.module_from_spec(spec)  # not executed
    return True


class StandIns:
    """Finds :data:`TCMSG` and :data:`CONFIG` as the stand-in modules built below (packages
    with pyroute2's own search path, so that their submodules still import).  A meta path
    finder and loader by protocol: ``importlib.abc`` would import ``importlib.resources``,
    ``tempfile`` and ``random``, whose seeding waits for the kernel's CRNG."""

    def __init__(self, package_path: Sequence[str]) -> None:
        self._path = list(package_path)
        self._build: dict[str, Callable[[types.ModuleType], None]] = {
            TCMSG: _tcmsg, CONFIG: _config}

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self._build:
            return None
        spec = importlib.machinery.ModuleSpec(fullname, cast("Loader", self), is_package=True)
        spec.submodule_search_locations = [
            os.path.join(p, *fullname.split(".")[1:]) for p in self._path]
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: types.ModuleType) -> None:
        self._build[module.__name__](module)


def _tcmsg(module: types.ModuleType) -> None:
    """``tcmsg`` (the header, attributes as raw bytes) and no traffic-control plugins."""
    from pyroute2.netlink import nlmsg

    class tcmsg(nlmsg):  # type: ignore[misc]  # pyroute2 is untyped
        """pyroute2's ``tcmsg`` header; its attributes kept as raw bytes."""

        prefix = "TCA_"
        fields = (("family", "B"), ("pad1", "B"), ("pad2", "H"), ("index", "i"),
                  ("handle", "I"), ("parent", "I"), ("info", "I"))
        nla_map = (("TCA_UNSPEC", "none"), ("TCA_KIND", "asciiz"),
                   ("TCA_OPTIONS", "hex"), ("TCA_STATS", "hex"), ("TCA_XSTATS", "hex"),
                   ("TCA_RATE", "hex"), ("TCA_FCNT", "hex"), ("TCA_STATS2", "hex"),
                   ("TCA_STAB", "hex"))

    module.tcmsg = tcmsg  # type: ignore[attr-defined]
    module.plugins = {}  # type: ignore[attr-defined]


MULTIPROCESSING_NAMES = {"MpPipe": "Pipe", "MpQueue": "Queue", "MpProcess": "Process"}


def _config(module: types.ModuleType) -> None:
    """pyroute2 0.7.7's ``config`` settings, without ``platform`` and ``multiprocessing``."""
    import re
    import signal
    import socket
    import struct

    version_re = re.compile("^[0-9.]+")

    def parse_kernel_version(kernel_name: str) -> list[int]:
        match = version_re.match(kernel_name)
        if match is None:
            return []
        return [int(x) for x in kernel_name[:match.end()].split(".") if x]

    def __getattr__(name: str) -> Any:  # PEP 562: multiprocessing only when used
        if name not in MULTIPROCESSING_NAMES:
            raise AttributeError(f"module {CONFIG!r} has no attribute {name!r}")
        import multiprocessing

        value = getattr(multiprocessing, MULTIPROCESSING_NAMES[name])
        setattr(module, name, value)
        return value

    u = os.uname()
    module.__dict__.update(
        kernel_version_re=version_re, parse_kernel_version=parse_kernel_version,
        SocketBase=socket.socket, ipdb_nl_async=True, nlm_generator=False,
        nla_via_getattr=False, async_qsize=4096, commit_barrier=0, gc_timeout=60,
        db_transaction_limit=1, cache_expire=60,
        signal_stop_remote=getattr(signal, "SIGUSR1", None), mock_iproute=False,
        nlsocket_thread_safe=True,
        uname=(u.sysname, u.nodename, u.release, u.version, u.machine, ""),
        machine=u.machine, arch=f"{struct.calcsize('P') * 8}bit",
        kernel=parse_kernel_version(u.release),
        AF_BRIDGE=getattr(socket, "AF_BRIDGE", 7), AF_NETLINK=getattr(socket, "AF_NETLINK", 16),
        data_plugins_pkgs=[], data_plugins_path=[],
        netns_path=["/var/run/netns", "/var/run/docker/netns"],
        entry_points_aliases={"pyroute2.netlink.exceptions": "pyroute2.netlink.exceptions"},
        __getattr__=__getattr__)
