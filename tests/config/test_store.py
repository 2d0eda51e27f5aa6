"""The A/B config store: power cuts at every byte, torn writes, damage, permissions, HMAC."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.config import Config, ConfigStore, DirectoryMedium, RawMedium, open_store
from appliance.config.store import SlotStatus
from appliance.errors import ConfigError

KEY = "00112233445566778899aabbccddeeff" * 2
SECRET = b"board-otp-secret-0001"


class PowerCut(Exception):
    """The power went off while writing."""


class CutDirectory(DirectoryMedium):
    """The real directory medium; the write stops after ``budget`` bytes (a fault injector)."""

    budget: int | None = None

    def _pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if self.budget is None:
            return super()._pwrite(fd, data, offset)
        super()._pwrite(fd, data[:self.budget], offset)
        raise PowerCut


class CutRaw(RawMedium):
    """The real raw-area medium; the write stops after ``budget`` bytes (a fault injector)."""

    budget: int | None = None

    def _pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if self.budget is None:
            return super()._pwrite(fd, data, offset)
        super()._pwrite(fd, data[:self.budget], offset)
        raise PowerCut


def configs() -> list[Config]:
    base = Config().set("nbd.uri", "nbds://nbdroot@10.0.2.2/root").set("psk.key", KEY)
    return [base.set("board.phy", "1"),
            base.set("board.phy", "2").set("net.dns", "10.0.2.3"),
            base.set("board.phy", "3").set("net.interface", "eth1")]


def erased_area(path: Path, size: int = 8192) -> Path:
    path.write_bytes(b"\xff" * size)
    return path


Medium = CutDirectory | CutRaw


def make_medium(kind: str, tmp_path: Path) -> Medium:
    if kind == "dir":
        d = tmp_path / "boot"
        d.mkdir()
        return CutDirectory(d)
    return CutRaw(erased_area(tmp_path / "area"))


def slot_bytes(medium: Medium, index: int) -> tuple[Path, int]:
    """Where slot *index* starts: (file, offset)."""
    if isinstance(medium, CutDirectory):
        return medium.paths[index], 0
    return medium.path, medium.offset + index * medium.slot_size


def scribble(medium: Medium, index: int, start: int, end: int, rng: random.Random) -> None:
    """Garbage where the interrupted write had not reached yet (sectors torn or reordered)."""
    path, base = slot_bytes(medium, index)
    with open(path, "r+b") as f:
        f.seek(base + start)
        f.write(rng.randbytes(end - start))


@pytest.mark.parametrize("secret", [None, SECRET], ids=["crc", "hmac"])
@pytest.mark.parametrize(("kind", "tear"), [
    ("dir", "cut"), ("dir", "garbage"), ("dir", "truncate"), ("raw", "cut"), ("raw", "garbage"),
])
def test_power_cut_at_every_byte_keeps_old_or_new(
        kind: str, tear: str, secret: bytes | None, tmp_path: Path) -> None:
    """The write stops after byte k, for every k; what remains is as the tear leaves it."""
    medium = make_medium(kind, tmp_path)
    store = ConfigStore(medium, secret)
    first, old, new = configs()
    store.save(first)
    store.save(old)  # both slots hold valid configs now; slot a is the older
    record = store.encode(new, seq=3)
    rng = random.Random(len(record))
    outcomes = {"old": 0, "new": 0}
    for k in range(len(record) + 1):
        store.save(first)  # reset: the newest is `old`, the target slot holds `first`
        store.save(old)
        newest = store.newest()
        assert newest is not None and newest.config == old
        target = 1 - newest.index
        medium.budget = k
        with pytest.raises(PowerCut):
            store.save(new)
        medium.budget = None
        if tear == "garbage" and k < len(record):
            scribble(medium, target, k, len(record), rng)
        if tear == "truncate":
            os.truncate(slot_bytes(medium, target)[0], k)
        loaded = ConfigStore(type(medium)(*_args(medium)), secret).load()
        assert loaded in (old, new), f"cut at byte {k}: {loaded!r}"
        outcomes["new" if loaded == new else "old"] += 1
        if k < len(record) - 4:  # before the CRC is complete only the old one can be valid
            assert loaded == old, f"cut at byte {k} loaded the new config"
    assert outcomes["new"] >= 1 and outcomes["old"] >= len(record) - 4
    # after the cut, the next save succeeds and wins
    store.save(new)
    assert ConfigStore(type(medium)(*_args(medium)), secret).load() == new


def _args(medium: Medium) -> tuple[Path] | tuple[Path, int, int]:
    if isinstance(medium, CutDirectory):
        return (medium.directory,)
    return (medium.path, medium.offset, 2 * medium.slot_size)


@pytest.mark.parametrize("kind", ["dir", "raw"])
def test_power_cut_during_the_first_save_is_a_clear_error_then_recoverable(
        kind: str, tmp_path: Path) -> None:
    medium = make_medium(kind, tmp_path)
    store = ConfigStore(medium)
    new = configs()[0]
    record = store.encode(new, seq=1)
    for k in range(0, len(record) + 1, 7):
        medium.budget = k
        with pytest.raises(PowerCut):
            store.save(new)
        medium.budget = None
        try:
            loaded = store.load()
        except ConfigError as exc:
            assert "no valid configuration stored" in str(exc)
            assert "\n" not in str(exc)
        else:
            assert loaded in (Config(), new)
        medium.budget = None
    store.save(new)
    assert store.load() == new


def test_save_alternates_slots_and_never_touches_the_newest(tmp_path: Path) -> None:
    store = ConfigStore(DirectoryMedium(tmp_path))
    a, b, c = configs()
    assert store.save(a).name == "a"
    before = (tmp_path / "nbdroot-config.a").read_bytes()
    assert store.save(b).name == "b"
    assert (tmp_path / "nbdroot-config.a").read_bytes() == before
    slot = store.save(c)
    assert (slot.name, slot.seq) == ("a", 3)
    assert store.load() == c


def test_damaged_newest_slot_falls_back_to_the_older(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    store = ConfigStore(DirectoryMedium(tmp_path))
    old, new, _ = configs()
    store.save(old)
    store.save(new)
    path = tmp_path / "nbdroot-config.b"
    data = bytearray(path.read_bytes())
    data[40] ^= 0x01  # one flipped bit in the payload
    path.write_bytes(bytes(data))
    assert store.load() == old
    assert "CRC mismatch" in caplog.text
    # the next save goes to the damaged slot, not over the good one
    assert store.save(new).name == "b"
    assert store.load() == new


def test_blank_store_loads_empty_and_garbage_is_a_clear_error(tmp_path: Path) -> None:
    assert ConfigStore(DirectoryMedium(tmp_path)).load() == Config()
    assert open_store(erased_area(tmp_path / "area")).load() == Config()
    (tmp_path / "nbdroot-config.a").write_bytes(b"hello, this is not a config slot at all")
    (tmp_path / "nbdroot-config.b").write_bytes(b"\x00" * 100)
    with pytest.raises(ConfigError) as info:
        open_store(tmp_path).load()
    assert str(info.value) == ("no valid configuration stored (slot a: not a config slot "
                               "(bad magic)); configure the board again and save")


def test_slots_are_private(tmp_path: Path) -> None:
    store = ConfigStore(DirectoryMedium(tmp_path))
    store.save(configs()[0])
    store.save(configs()[1])
    for name in ("nbdroot-config.a", "nbdroot-config.b"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, oct(mode)


def test_hmac_rejects_wrong_secret_and_untagged_slots(tmp_path: Path) -> None:
    plain, tagged = tmp_path / "plain", tmp_path / "tagged"
    plain.mkdir()
    tagged.mkdir()
    config = configs()[0]
    ConfigStore(DirectoryMedium(plain)).save(config)
    ConfigStore(DirectoryMedium(tagged), SECRET).save(config)
    assert ConfigStore(DirectoryMedium(tagged), SECRET).load() == config
    assert ConfigStore(DirectoryMedium(tagged)).load() == config  # no secret: CRC only
    with pytest.raises(ConfigError, match="HMAC tag does not match"):
        ConfigStore(DirectoryMedium(tagged), b"another board").load()
    with pytest.raises(ConfigError, match="not authenticated"):
        ConfigStore(DirectoryMedium(plain), SECRET).load()


def test_valid_crc_but_invalid_content_is_ignored(tmp_path: Path) -> None:
    store = ConfigStore(DirectoryMedium(tmp_path))
    old = configs()[0]
    store.save(old)

    class Forged(Config):
        def to_text(self) -> str:
            return "board.phy=99\n"

    (tmp_path / "nbdroot-config.b").write_bytes(store.encode(Forged(), seq=9))
    slots = store.scan()
    assert slots[1].status is SlotStatus.INVALID
    assert "board.phy: phy must be 0-31 or auto" in slots[1].reason
    assert store.load() == old


def test_raw_area_too_small_or_missing(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.write_bytes(b"\xff" * 600)
    with pytest.raises(ConfigError, match="too small"):
        open_store(small)
    with pytest.raises(ConfigError, match=r"config location .*missing"):
        open_store(tmp_path / "missing")
    area = RawMedium(erased_area(tmp_path / "area", 1024))
    big = Config().set("nbd.uri", "nbd://h/" + "x" * 600)
    with pytest.raises(ConfigError, match="does not fit a 512-byte slot"):
        ConfigStore(area).save(big)


def test_save_reads_back(tmp_path: Path) -> None:
    class Lossy(DirectoryMedium):
        def _pwrite(self, fd: int, data: bytes, offset: int) -> None:
            super()._pwrite(fd, data[:-1] + bytes([data[-1] ^ 0xFF]), offset)

    with pytest.raises(ConfigError, match="did not read back"):
        ConfigStore(Lossy(tmp_path)).save(configs()[0])



class Bytes:
    """A medium that is just two byte strings in memory (for fuzzing the decoder)."""

    def __init__(self, a: bytes, b: bytes) -> None:
        self.slots = [a, b]

    def read_slot(self, index: int) -> bytes:
        return self.slots[index]

    def write_slot(self, index: int, data: bytes) -> None:
        self.slots[index] = data

    def describe(self, index: int) -> str:
        return f"slot {index}"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.integers(0, 399), st.binary(max_size=8))
def test_any_damage_loads_the_good_slot_or_says_why(
        noise: bytes, at: int, patch: bytes) -> None:
    good = configs()[1]
    store = ConfigStore(Bytes(b"", b""))
    store.save(good)
    record = bytearray(store.encode(configs()[2], seq=7))
    record[at:at + len(patch)] = patch
    for damaged in (noise, bytes(record)):
        medium = Bytes(store.medium.read_slot(0), damaged)  # type: ignore[attr-defined]
        loaded = ConfigStore(medium).load()
        assert loaded in (good, configs()[2])
        if loaded != good:  # only an intact record (maybe with bytes after it) may win
            intact = store.encode(configs()[2], seq=7)
            assert damaged[:len(intact)] == intact
    try:
        loaded = ConfigStore(Bytes(noise, bytes(record))).load()
    except ConfigError as exc:
        assert str(exc).startswith("no valid configuration stored (")
    else:
        assert loaded in (Config(), configs()[2])


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), [
    # RFC 5869, test cases 1 and 3 (SHA-256; case 3: no salt, no info)
    (bytes([0x0b] * 22), bytes(range(13)), bytes(range(0xf0, 0xfa)), 42,
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
     "34007208d5b887185865"),
    (bytes([0x0b] * 22), b"", b"", 42,
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
     "9d201395faa4b61a96c8"),
])
def test_hkdf_matches_rfc_5869(ikm: bytes, salt: bytes, info: bytes, length: int,
                               okm: str) -> None:
    from appliance.config.store import hkdf_sha256

    assert hkdf_sha256(ikm, info, length, salt).hex() == okm


def test_the_store_key_is_the_one_cryptography_derives() -> None:
    """Slots tagged before the store moved to the standard library still verify."""
    hkdf = pytest.importorskip("cryptography.hazmat.primitives.kdf.hkdf")
    from cryptography.hazmat.primitives import hashes

    from appliance.config.store import HKDF_INFO, _derive_key

    theirs = hkdf.HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=HKDF_INFO).derive(SECRET)
    assert _derive_key(SECRET) == theirs
