"""appliance.boot.lazy_inspect: PID 1's dataclasses get their annotations from a stand-in,
as from ``inspect`` itself, and anything more imports the standard module.  Each case runs
in a fresh interpreter: the stand-in is process-wide."""

from __future__ import annotations

from tests.fresh_python import fresh_python

CLASSES = '''
import dataclasses, enum, typing

class Plain: pass
class Annotated:
    x: int
    y: "str" = "a"
class Child(Annotated): pass
class Grandchild(Child):
    z: "list[int]"
@dataclasses.dataclass(frozen=True)
class Data:
    """docstring"""
    a: int
    b: typing.ClassVar[int] = 3
class Colour(enum.Enum):
    RED = 1
CASES = (Plain, Annotated, Child, Grandchild, Data, Colour, int, type)
'''


def test_dataclasses_need_no_inspect_and_annotations_match() -> None:
    out = fresh_python(
        "import sys\nfrom appliance.boot import lazy_inspect\nassert lazy_inspect.install()\n"
        + CLASSES +
        "stand_in = [sys.modules['inspect'].get_annotations(c) for c in CASES]\n"
        "print(lazy_inspect.standing_in(), 'ast' in sys.modules, 'dis' in sys.modules)\n"
        "import inspect\n"  # the stand-in still: import finds it in sys.modules
        "real = [lazy_inspect.real().get_annotations(c) for c in CASES]\n"
        "print(stand_in == real, lazy_inspect.standing_in(),\n"
        "      sys.modules['inspect'] is not inspect)\n"
        "print(stand_in[1], stand_in[2], Data(1))")
    assert out.splitlines() == [
        "True False False",
        "True False True",
        "{'x': <class 'int'>, 'y': 'str'} {} Data(a=1)"]


def test_anything_else_imports_the_standard_module() -> None:
    out = fresh_python(
        "import sys, types\nfrom appliance.boot import lazy_inspect\nlazy_inspect.install()\n"
        "import inspect\n"
        "def f(a, b=2): pass\n"
        "print(inspect.signature(f), lazy_inspect.standing_in(), 'ast' in sys.modules)\n"
        "import inspect as again\n"
        "print(again is sys.modules['inspect'], again.isfunction(f), inspect.isclass(int))\n"
        "print(inspect.get_annotations(f), inspect.get_annotations(types))")
    assert out.splitlines() == ["(a, b=2) False True", "True True True", "{} {}"]


def test_the_boot_modules_never_need_it() -> None:
    """The point of it: PID 1's own imports end with the stand-in still in place."""
    out = fresh_python(
        "import importlib, sys\nfrom appliance.boot import lazy_inspect, precompiled\n"
        "lazy_inspect.install()\nfrom appliance.boot.lean import lean_pyroute2\n"
        "lean_pyroute2()\n"
        "for name in precompiled.BOOT_MODULES: importlib.import_module(name)\n"
        "print(lazy_inspect.standing_in(), 'ast' in sys.modules)")
    assert out == "True False"


def test_nothing_happens_once_inspect_is_imported() -> None:
    out = fresh_python("import inspect\nfrom appliance.boot import lazy_inspect\n"
                       "print(lazy_inspect.install(), lazy_inspect.standing_in())")
    assert out == "False False"
