"""The two layers: the board agent imports nothing from the host layer or the builder.

The board layer is :mod:`appliance` without :mod:`appliance.host`, plus :mod:`board`; it is
what the initramfs carries.  Every ``import`` statement in it (at any depth, lazy ones in
functions included) is read from the source, so a host import hidden in a function that
the board never calls still fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

from image import initramfs

REPO = Path(__file__).resolve().parent.parent
HOST_MODULES = ("appliance.host", "image", "tests")


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


def test_the_import_check_sees_lazy_imports(tmp_path: Path) -> None:
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from appliance.host.servers import free_port\n")
    assert is_host(max(imported_modules(sample)))
