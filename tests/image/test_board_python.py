"""The board's Python, run on the host under qemu-user: every agent module imports there.

A missing standard-library module or shared library in the initramfs shows up only on
the board, late in a slow emulated boot.  Running the initramfs's own armhf python3.13
under ``qemu-arm-static`` (Debian's qemu-user-static) imports everything in seconds:
each module of ``appliance`` and ``board``, and what their lazy imports load on the board
(pyroute2's IPRoute and generic netlink, ssl with PSK callbacks, libfdt, netifaces).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHECK = r'''
import importlib, pkgutil, ssl, sys
import appliance, board
failed = []
names = [m.name for pkg in (appliance, board)
         for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
         if not m.name.endswith("__main__")]
names += ["pyroute2.iproute.linux", "pyroute2.netlink.generic", "netifaces", "libfdt",
          "encodings.idna"]
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
if not hasattr(ssl.SSLContext, "set_psk_client_callback"):
    failed.append("ssl: no set_psk_client_callback")
print(f"imported {len(names)} modules")
print("\n".join(failed) or "ALL OK")
'''


@pytest.fixture(scope="module")
def initramfs_tree(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = tmp_path_factory.mktemp("initramfs")
    with subprocess.Popen(["gzip", "-dc", str(image_dir / "initramfs.cpio.gz")],
                          stdout=subprocess.PIPE) as unzip:
        subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"],
                       stdin=unzip.stdout, cwd=tree, check=True, timeout=300)
    assert unzip.returncode == 0
    return tree


def board_python(tree: Path, name: str, code: str) -> str:
    """Run ``code`` on the initramfs's own python3.13 under qemu-user; its stdout."""
    qemu = shutil.which("qemu-arm-static")
    assert qemu, "qemu-arm-static missing: install Debian's qemu-user-static (./setup.sh test)"
    (tree / "tmp" / name).write_text(code)
    done = subprocess.run([qemu, "-L", str(tree), str(tree / "usr/bin/python3.13"), "-I",
                           str(tree / "tmp" / name)],
                          capture_output=True, text=True, timeout=600, cwd=tree)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_agent_module_imports_on_the_board_python(initramfs_tree: Path) -> None:
    out = board_python(initramfs_tree, "check.py", CHECK)
    assert out.strip().endswith("ALL OK"), out


BOOT_IMPORTS = r'''
import importlib, json, sys
from pathlib import Path
from appliance.boot import module_index
finder = module_index.install()
from appliance.boot.precompiled import BOOT_MODULES, Stats, install
stored = install()
from appliance.boot.lean import lean_pyroute2
lean_pyroute2()
for name in BOOT_MODULES:
    importlib.import_module(name)
print(stored, Stats.hits, Stats.misses, Stats.patterns_stored, Stats.pattern_misses)
# every module imported from a file of the tree: found through the index, and there
root = sys.prefix.removesuffix("/usr")
outside = sorted(name for name, m in sys.modules.items()
                 if module_index.entry(m, root) is not None and name not in finder.index)
missing = sorted(name for name, (_, origin, code, _) in finder.index.items()
                 if not Path(root + code).is_file())
print(json.dumps([len(finder.index), finder.found, outside, missing]))
'''


@pytest.fixture(scope="module")
def boot_imports(initramfs_tree: Path) -> list[str]:
    """The boot's imports on this Python, with the image's stored code and index: the
    counts of what ran stored, then the index's (one run for both tests)."""
    return board_python(initramfs_tree, "boot_imports.py", BOOT_IMPORTS).splitlines()


def test_the_image_holds_the_boots_compiled_code(boot_imports: list[str]) -> None:
    """The builder recorded it on this Python: every boot dataclass and namedtuple runs
    stored code, every pattern is made from stored code."""
    stored, hits, misses, patterns, pattern_misses = map(int, boot_imports[0].split())
    assert stored > 30 and hits >= stored and misses == 0, boot_imports
    assert patterns > 10 and pattern_misses == 0, boot_imports


def test_the_image_indexes_the_boots_modules(boot_imports: list[str]) -> None:
    """Every module the boot imports from a file is in the index, and every indexed file
    is in the initramfs."""
    entries, found, outside, missing = json.loads(boot_imports[1])
    assert entries > 100 and found > 100, boot_imports
    assert outside == [] and missing == [], boot_imports
