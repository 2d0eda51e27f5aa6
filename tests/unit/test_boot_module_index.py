"""appliance.boot.module_index: modules found through an index recorded at build time are
the modules a normal import makes.  Each case runs in fresh interpreters: the finder is
process-wide."""

from __future__ import annotations

import compileall
import json
import py_compile
from pathlib import Path

from tests.fresh_python import fresh_python

# What each import gave: where it came from, and that it works.
DESCRIBE = '''
import importlib, json, sys
sys.path.insert(0, {tmp!r})
{setup}
out = {{}}
for name in ("pkg", "pkg.sub", "bare", "mmap", "json.decoder"):
    m = importlib.import_module(name)
    s = m.__spec__
    out[name] = [getattr(m, "__file__", None), getattr(m, "__cached__", None),
                 getattr(m, "__path__", None), s.origin, s.has_location, s.parent]
import pkg.sub, bare
out["calls"] = [pkg.sub.twice(21), bare.VALUE, pkg.NAME]
print(json.dumps(out))
'''

INSTALL = '''
from pathlib import Path
from appliance.boot import module_index
finder = module_index.install(Path({index!r}))
'''


def sample(tmp: Path) -> None:
    """A package with source and bytecode, a module with bytecode only."""
    pkg = tmp / "pkg"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("NAME = 'pkg'\n")
    (pkg / "sub.py").write_text("def twice(x):\n    return 2 * x\n")
    compileall.compile_dir(pkg, quiet=1)
    (tmp / "bare.py").write_text("VALUE = 'bare'\n")
    py_compile.compile(str(tmp / "bare.py"), cfile=str(tmp / "bare.pyc"))
    (tmp / "bare.py").unlink()


def record(tmp: Path) -> Path:
    index = tmp / "index.marshal"
    fresh_python(f"import sys, importlib; sys.path.insert(0, {str(tmp)!r})\n"
                 "for n in ('pkg', 'pkg.sub', 'bare', 'mmap', 'json.decoder'):\n"
                 "    importlib.import_module(n)\n"
                 "from appliance.boot.module_index import record\n"
                 f"open({str(index)!r}, 'wb').write(record(root=''))")
    return index


def describe(tmp: Path, setup: str = "") -> dict[str, list[object]]:
    return dict(json.loads(fresh_python(DESCRIBE.format(tmp=str(tmp), setup=setup))))


def test_indexed_modules_are_the_imported_ones(tmp_path: Path) -> None:
    sample(tmp_path)
    index = record(tmp_path)
    plain = describe(tmp_path)
    indexed = describe(tmp_path, INSTALL.format(index=str(index)) +
                       "assert finder is not None\n")
    assert indexed == plain
    assert plain["calls"] == [42, "bare", "pkg"]
    assert str(plain["pkg.sub"][1]).endswith(".pyc") and plain["pkg"][2] == [
        str(tmp_path / "pkg")]


def test_the_finder_answers_the_index_and_passes_on_the_rest(tmp_path: Path) -> None:
    sample(tmp_path)
    index = record(tmp_path)
    (tmp_path / "later.py").write_text("X = 1\n")  # not in the index: found as usual
    out = fresh_python(f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n" +
                       INSTALL.format(index=str(index)) +
                       "import importlib\n"
                       "for n in ('pkg.sub', 'bare', 'mmap', 'later'):\n"
                       "    m = importlib.import_module(n)\n"
                       "    print(n, type(m.__spec__.loader).__name__)\n"
                       "print('found', finder.found)")
    lines = out.splitlines()
    assert lines[0] == "pkg.sub SourcelessFileLoader"  # read from its .pyc
    assert lines[1] == "bare SourcelessFileLoader"
    assert lines[2] in ("mmap ExtensionFileLoader", "mmap BuiltinImporter")
    assert lines[3] == "later SourceFileLoader"
    assert lines[-1] == f"found {4 if 'Extension' in lines[2] else 3}"  # and pkg


def test_after_a_switch_of_root_the_usual_finders_answer(tmp_path: Path) -> None:
    """A finder installed on another filesystem than today's / passes every name on."""
    sample(tmp_path)
    index = record(tmp_path)
    out = fresh_python(f"import sys, os; sys.path.insert(0, {str(tmp_path)!r})\n" +
                       INSTALL.format(index=str(index)) +
                       "finder.root_device = os.stat('/').st_dev + 1  # as after switch_root\n"
                       "import pkg.sub\n"
                       "print(type(pkg.sub.__spec__.loader).__name__, finder.found)")
    assert out == "SourceFileLoader 0"


def test_the_index_holds_only_files_with_standard_loaders(tmp_path: Path) -> None:
    sample(tmp_path)
    out = fresh_python(f"import sys, marshal; sys.path.insert(0, {str(tmp_path)!r})\n"
                       "import pkg.sub, bare, json.decoder, types\n"
                       "sys.modules['standin'] = types.ModuleType('standin')\n"
                       "sys.modules['not_a_module'] = object()  # as some libraries do\n"
                       "from appliance.boot.module_index import record\n"
                       "index = marshal.loads(record(root=''))\n"
                       "print(sorted(index['pkg.sub'][:1] + index['bare'][:1]))\n"
                       "print('sys' in index, 'standin' in index, 'json' in index)\n"
                       f"print(marshal.loads(record(root={str(tmp_path)!r}))['bare'][1])")
    lines = out.splitlines()
    assert lines[0] == "['bytecode', 'source']"
    assert lines[1] == "False False True"  # built in, no file, a stdlib package
    assert lines[2] == "/bare.pyc"  # made relative to the root it was recorded under


def test_the_recording_is_reproducible(tmp_path: Path) -> None:
    sample(tmp_path)
    first = record(tmp_path).read_bytes()
    assert record(tmp_path).read_bytes() == first


def test_an_index_that_does_not_load_changes_nothing(tmp_path: Path) -> None:
    sample(tmp_path)
    good = record(tmp_path).read_bytes()
    cases = {"missing": None, "truncated": good[: len(good) // 2], "empty": b"",
             "not a table": b"\xe9\x03\x00\x00\x00",  # marshal of the int 3
             "wrong entries": b"{\xda\x01a\xe9\x01\x00\x00\x000"}  # {'a': 1}
    for name, data in cases.items():
        path = tmp_path / f"{name}.marshal"
        if data is not None:
            path.write_bytes(data)
        out = fresh_python(INSTALL.format(index=str(path)) + "import sys\n"
                           "print(finder, any(type(f).__name__ == 'IndexFinder' "
                           "for f in sys.meta_path))")
        assert out == "None False", name
    directory = tmp_path / "a-directory.marshal"
    directory.mkdir()
    assert fresh_python(INSTALL.format(index=str(directory)) + "print(finder)") == "None"
