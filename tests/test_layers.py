"""The two layers: the board agent imports nothing from the host layer or the builder.

The board layer is :mod:`appliance` without :mod:`appliance.host`, plus :mod:`board`; it is
what the initramfs carries.  Every ``import`` statement in it (at any depth, lazy ones in
functions included) is read from the source, so a host import hidden in a function that
the board never calls still fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from image import initramfs

REPO = Path(__file__).resolve().parent.parent
HOST_MODULES = ("appliance.host", "image", "tests")
# -I -S: no site-packages (so not this checkout's editable install), no PYTHONPATH; the
# copied board tree is put first by hand.  --help needs only the standard library.
ISOLATED_MAIN = ("import os, sys; sys.path.insert(0, os.environ['BOARD_TREE']); "
                 "import appliance.cli; sys.argv[0] = 'appliance'; "
                 "sys.exit(appliance.cli.main())")


def imported_modules(path: Path) -> set[str]:
    """Every module name an import statement in ``path`` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def is_host(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HOST_MODULES)


def test_board_layer_imports_no_host_module() -> None:
    offenders = [f"{path.relative_to(REPO)} imports {module}"
                 for path in initramfs.agent_sources(REPO) if path.suffix == ".py"
                 for module in sorted(imported_modules(path)) if is_host(module)]
    assert offenders == []


def test_board_sources_leave_out_the_host_layer() -> None:
    sources = [p.relative_to(REPO).as_posix() for p in initramfs.agent_sources(REPO)]
    assert "appliance/nbd/proto.py" in sources
    assert "board/profile.py" in sources
    assert not [s for s in sources if s.startswith("appliance/host/")]


def test_add_agent_copies_only_the_board_layer(tmp_path: Path) -> None:
    initramfs.add_agent(tmp_path)
    dist = tmp_path / initramfs.DIST
    assert (dist / "appliance" / "relay").is_dir()
    assert (dist / "board" / "profiles").is_dir()
    assert not (dist / "appliance" / "host").exists()
    assert not list(dist.rglob("__pycache__"))


def test_the_board_layer_alone_runs_the_command(tmp_path: Path) -> None:
    """The tree the initramfs gets, run by itself: board commands there, host ones absent."""
    initramfs.add_agent(tmp_path)
    env = {"BOARD_TREE": str(tmp_path / initramfs.DIST), "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-I", "-S", "-c", ISOLATED_MAIN, "--help"], env=env,
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    commands = {line.split()[0] for line in run.stdout.splitlines()
                if line.startswith("    ") and not line.startswith("     ")}
    assert {"nbd", "board", "boot", "status"} <= commands, run.stdout
    assert not {"demo", "image", "bench", "console"} & commands, run.stdout


def test_the_import_check_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from appliance.host.servers import free_port\n")
    assert is_host(max(imported_modules(sample)))
