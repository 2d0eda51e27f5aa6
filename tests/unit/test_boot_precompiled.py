"""appliance.boot.precompiled: the dataclasses' methods, the namedtuples' ``__new__`` and
the regular expressions, compiled once and stored, run as the same code at boot.  Each
case runs in fresh interpreters: the patch is process-wide."""

from __future__ import annotations

from pathlib import Path

from tests.fresh_python import fresh_python

# A module of dataclasses with what the agent uses: frozen, defaults, default_factory,
# keyword-only fields, slots, ordering, a __post_init__; two namedtuples and patterns
# (text and bytes, flags, named groups).
SAMPLE = '''
from __future__ import annotations
import collections, re
from dataclasses import dataclass, field, FrozenInstanceError, KW_ONLY
from typing import NamedTuple

Pair = collections.namedtuple("Pair", "left right", defaults=[0])

class Span(NamedTuple):
    start: int
    end: int = -1

WORD = re.compile(r"(?P<word>[a-z]+)-(?P<num>\\d+)", re.IGNORECASE)
FRAME = re.compile(rb"^nbd:(\\w+)$", re.MULTILINE)

@dataclass(frozen=True)
class Point:
    x: int
    y: int = 2
    tags: list[str] = field(default_factory=list)

@dataclass(order=True, slots=True)
class Item:
    name: str
    _: KW_ONLY
    size: int = 0

    def __post_init__(self) -> None:
        self.size = max(self.size, len(self.name))
'''

EXERCISE = '''
import dataclasses, sys
sys.path.insert(0, {tmp!r})
{setup}
from sample import Point, Item, Pair, Span, WORD, FRAME
p = Point(1)
try:
    p.x = 5
    frozen = "mutable"
except dataclasses.FrozenInstanceError:
    frozen = "frozen"
print(repr(p), p == Point(1, 2, []), hash(Point(3, 4, None)) == hash(Point(3, 4, None)), frozen)
print(sorted([Item("bb"), Item("a", size=7)]), Item("abc").size, Item.__slots__)
@dataclasses.dataclass
class Later:
    z: float = 1.5
print(Later(), [f.name for f in dataclasses.fields(Point)])
print(Pair(1), Pair(1, 2)._asdict(), Span(3), Span._fields, Span(1)._replace(end=4))
m = WORD.search("see ABC-42 here")
print(m.group("word", "num"), m.span(), WORD.groupindex, WORD.flags, WORD.pattern)
print(FRAME.findall(b"nbd:one\\nx\\nnbd:two"), FRAME.flags)
import re
print(re.compile(r"later-(\\d)").match("later-7").group(1))
'''

INSTALL = '''
from pathlib import Path
from appliance.boot.precompiled import Stats, install
print("stored", install(Path({table!r})))
'''


def record(tmp: Path, modules: str) -> Path:
    table = tmp / "code.marshal"
    fresh_python(f"import sys; sys.path.insert(0, {str(tmp)!r})\n"
                 "from appliance.boot.precompiled import record\n"
                 f"open({str(table)!r}, 'wb').write(record({modules}))")
    return table


def sample(tmp: Path) -> Path:
    (tmp / "sample.py").write_text(SAMPLE)
    return record(tmp, "['sample']")


def test_stored_code_behaves_as_the_compiled(tmp_path: Path) -> None:
    table = sample(tmp_path)
    plain = fresh_python(EXERCISE.format(tmp=str(tmp_path), setup=""))
    stored = fresh_python(EXERCISE.format(tmp=str(tmp_path), setup=INSTALL.format(table=str(table)))
                          + "print('hits', Stats.hits, 'misses', Stats.misses)\n"
                          + "print('patterns', Stats.pattern_hits, Stats.pattern_misses)")
    lines = stored.splitlines()
    assert lines[0] == "stored 4"
    assert lines[1:-2] == plain.splitlines()
    assert "frozen" in plain and "Item(name='a', size=7)" in plain
    assert "('ABC', '42')" in plain and "[b'one', b'two']" in plain
    # Point, Item, Pair and Span ran stored; Later, defined after the recording, was compiled
    assert lines[-2] == "hits 4 misses 1"
    # WORD and FRAME were made from their stored code; later-(\d) was compiled
    hits, misses = map(int, lines[-1].split()[1:])
    assert hits == 2 and misses >= 1


def test_every_boot_dataclass_is_recorded(tmp_path: Path) -> None:
    """What the image builder records covers BOOT_MODULES: nothing compiled at boot."""
    table = record(tmp_path, "")
    out = fresh_python(INSTALL.format(table=str(table)) +
                       "import importlib\nfrom appliance.boot.lean import lean_pyroute2\n"
                       "from appliance.boot.precompiled import BOOT_MODULES\nlean_pyroute2()\n"
                       "for name in BOOT_MODULES: importlib.import_module(name)\n"
                       "print(Stats.hits, Stats.misses, Stats.pattern_hits, Stats.pattern_misses)")
    stored, counts = out.splitlines()
    hits, misses, pattern_hits, pattern_misses = map(int, counts.split())
    assert int(stored.split()[1]) > 30
    assert hits >= int(stored.split()[1]) and misses == 0
    assert pattern_hits > 10 and pattern_misses == 0


def test_the_recording_is_reproducible(tmp_path: Path) -> None:
    first = sample(tmp_path).read_bytes()
    assert sample(tmp_path).read_bytes() == first


def test_a_file_that_does_not_load_changes_nothing(tmp_path: Path) -> None:
    good = sample(tmp_path).read_bytes()
    cases = {"missing": None, "truncated": good[: len(good) // 2], "empty": b"",
             "not a table": b"\xe9\x03\x00\x00\x00"}  # marshal of the int 3
    for name, data in cases.items():
        path = tmp_path / f"{name}.marshal"
        if data is not None:
            path.write_bytes(data)
        out = fresh_python(INSTALL.format(table=str(path)) + "import dataclasses\n"
                           "print('patched' if 'exec' in vars(dataclasses) else 'untouched')")
        assert out.splitlines() == ["stored 0", "untouched"], name
    directory = tmp_path / "a-directory.marshal"
    directory.mkdir()
    assert fresh_python(INSTALL.format(table=str(directory))) == "stored 0"


def test_patterns_of_another_engine_are_not_used(tmp_path: Path) -> None:
    """A file recorded by a Python whose ``_sre`` differs: its texts run, its patterns not."""
    import marshal

    table = sample(tmp_path)
    stored = marshal.loads(table.read_bytes())
    stored["sre_magic"] += 1
    other = tmp_path / "other.marshal"
    other.write_bytes(marshal.dumps(stored))
    out = fresh_python(EXERCISE.format(tmp=str(tmp_path), setup=INSTALL.format(table=str(other)))
                       + "print(Stats.hits, Stats.pattern_hits, Stats.patterns_stored)")
    assert out.splitlines()[0] == "stored 4"
    assert out.splitlines()[-1] == "4 0 0"
