"""appliance.boot.lean: PID 1 imports pyroute2's netlink sockets without the package's
``__init__`` (NDB, sqlite3, the CLI server, psutil), and the boot's modules still work.
Each case runs in a fresh interpreter: the skip is process-wide."""

from __future__ import annotations

from tests.fresh_python import fresh_python

HEAVY = ("pyroute2.ndb", "sqlite3", "psutil", "http.server", "pyroute2.cli", "unittest.mock",
         "asyncio", "pyroute2.netlink.rtnl.tcmsg.sched_htb", "pyroute2.netlink.rtnl.tcmsg.common")

BOOT_IMPORTS = """
import sys
from appliance.boot.lean import lean_pyroute2
assert lean_pyroute2()
import appliance.net.up, appliance.kernel.netlink
from pyroute2.iproute.linux import IPRoute
with IPRoute() as ipr:
    assert any(link.get_attr("IFLA_IFNAME") == "lo" for link in ipr.get_links())
    assert not ipr.get_addr(label="nbdroot-no-such-label")
    assert ipr.get_qdiscs() is not None  # the stub's tcmsg still parses the kernel's replies
print(" ".join(m for m in {heavy!r} if m in sys.modules) or "none")
"""


def test_the_boot_imports_netlink_without_pyroute2s_package_init() -> None:
    assert fresh_python(BOOT_IMPORTS.format(heavy=HEAVY)) == "none"


def test_the_whole_package_still_imports_its_heavy_parts() -> None:
    """The reference for the test above: a plain import loads what the skip avoids."""
    code = f"import sys, pyroute2; print(sum(m in sys.modules for m in {HEAVY!r}))"
    assert int(fresh_python(code)) >= 3


def test_an_imported_package_is_left_alone() -> None:
    code = ("import pyroute2\nfrom appliance.boot.lean import lean_pyroute2\n"
            "print(lean_pyroute2(), hasattr(pyroute2, 'IPRoute'))")
    assert fresh_python(code) == "False True"


SETTINGS = """
import json, sys, types
{prelude}
from pyroute2 import config
out = {{}}
for name, value in vars(config).items():
    if name.startswith("__") or isinstance(value, types.ModuleType):
        continue
    out[name] = repr(value) if isinstance(value, (bool, int, str, list, dict, tuple,
                                                  type(None))) else type(value).__name__
out["uname"] = repr(config.uname[:5])  # [5], uname -p: "unknown" (blank) or the machine
for name in ("MpPipe", "MpQueue", "MpProcess"):  # the stand-in imports them when asked
    out[name] = getattr(config, name).__qualname__
out["multiprocessing imported"] = "multiprocessing" in sys.modules
print(json.dumps(out))
"""


def test_the_config_stand_in_has_pyroute2s_settings() -> None:
    import json

    real = json.loads(fresh_python(SETTINGS.format(prelude="")))
    lean = json.loads(fresh_python(SETTINGS.format(
        prelude="from appliance.boot.lean import lean_pyroute2\nassert lean_pyroute2()")))
    assert lean.pop("multiprocessing imported") is True  # MpPipe was just asked for
    real.pop("multiprocessing imported")
    assert lean == real


def test_the_lean_config_imports_no_platform_or_multiprocessing() -> None:
    code = ("import sys\nfrom appliance.boot.lean import lean_pyroute2\nassert lean_pyroute2()\n"
            "from pyroute2.iproute.linux import IPRoute\nfrom pyroute2 import config\n"
            "assert config.kernel and config.arch.endswith('bit')\n"
            "print(sorted(m for m in ('platform', 'multiprocessing') if m in sys.modules))")
    assert fresh_python(code) == "[]"
