"""Power-cut-safe storage of the configuration: two slots (A/B), sequence number, CRC32.

Why A/B slots and not write-temp + rename: the store lives either on the board's
boot partition (FAT, where a rename is not atomic across a power cut: no journal,
directory entry and FAT chain are separate writes) or in a raw area of a disk
(no files, no rename at all).  A/B slots work the same on both and need nothing
from the filesystem:

* a save writes the *other* slot than the newest valid one, so the last good
  configuration is never touched while the new one is written;
* each slot is ``header | payload | [HMAC tag] | CRC32`` and a load takes the
  valid slot with the highest sequence number; a slot torn at any byte fails its
  length or CRC check and is ignored;
* after writing, the slot is fsynced and read back.

Slot record (big-endian)::

    magic   8s  b"NBDRCFG1"
    seq     Q   sequence number, +1 per save
    flags   I   bit 0: a 32-byte HMAC-SHA256 tag follows the payload
    length  I   payload length in bytes
    payload     UTF-8 ``key=value`` lines (Config.to_text)
    tag     32s optional, HMAC-SHA256 over header and payload
    crc     I   CRC32 of everything before it

Optional authentication: given a board secret (for example read from the SoC's OTP
fuses), the store derives a key with HKDF-SHA256 (RFC 5869, on the standard library's
``hmac``) and tags each slot with HMAC-SHA256, compared in constant time
(``hmac.compare_digest``); a store with a secret rejects untagged or badly tagged slots.  The slot
files are created with mode 0600 (they hold the PSK); on a FAT boot partition, where
chmod is refused, mount it with ``fmask=0177,dmask=0077`` to get the same effect.
"""

from __future__ import annotations

import enum
import hmac
import logging
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from appliance.config.model import Config
from appliance.errors import ConfigError

log = logging.getLogger(__name__)

MAGIC = b"NBDRCFG1"
HEADER = struct.Struct("!8sQII")  # magic, seq, flags, payload length
CRC = struct.Struct("!I")
SHA256_LEN = 32
TAG_SIZE = SHA256_LEN  # HMAC-SHA256
FLAG_HMAC = 1
KNOWN_FLAGS = FLAG_HMAC
MAX_PAYLOAD = 64 * 1024
SLOT_NAMES = ("a", "b")
HKDF_INFO = b"nbdroot-imx6 config v1"
DEFAULT_RAW_SLOT_SIZE = 4096


class Medium(Protocol):
    """Where the two slots live: read and write whole slots by index (0 = A, 1 = B)."""

    def read_slot(self, index: int) -> bytes:
        """The slot's bytes (may be empty, erased or torn)."""
        ...

    def write_slot(self, index: int, data: bytes) -> None:
        """Write *data* at the start of the slot and make it durable (fsync)."""
        ...

    def describe(self, index: int) -> str:
        """A human name for the slot, for messages."""
        ...


class DirectoryMedium:
    """Two files ``nbdroot-config.a`` / ``.b`` in a directory (the boot partition)."""

    def __init__(self, directory: Path, name: str = "nbdroot-config") -> None:
        self.directory = directory
        self.paths = tuple(directory / f"{name}.{s}" for s in SLOT_NAMES)

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def read_slot(self, index: int) -> bytes:
        try:
            with open(self.paths[index], "rb") as f:
                return f.read(MAX_PAYLOAD + 1024)
        except FileNotFoundError:
            return b""
        except OSError as exc:
            log.warning("cannot read %s: %s", self.paths[index], exc)
            return b""

    def write_slot(self, index: int, data: bytes) -> None:
        path = self.paths[index]
        created = not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                os.fchmod(fd, 0o600)
            except PermissionError:  # FAT: the mount's fmask decides (mount with fmask=0177)
                log.debug("cannot chmod %s; permissions come from the mount options", path)
            self._pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.directory)

    def _pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of *data* at *offset* (the one place bytes reach the medium)."""
        _pwrite_all(fd, data, offset)


class RawMedium:
    """A raw area (a file or block device region) split into two equal slots."""

    def __init__(self, path: Path, offset: int = 0, size: int | None = None) -> None:
        self.path = path
        self.offset = offset
        if size is None:
            size = self._device_size() - offset
        if size < 2 * 512:
            raise ConfigError(f"raw config area {path} is too small ({size} bytes, "
                              "need at least 1024)")
        self.slot_size = size // 2

    def _device_size(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            raise ConfigError(f"cannot open raw config area {self.path}: "
                              f"{exc.strerror or exc}") from None
        try:
            return os.lseek(fd, 0, os.SEEK_END)
        finally:
            os.close(fd)

    def describe(self, index: int) -> str:
        return f"{self.path} slot {SLOT_NAMES[index]}"

    def read_slot(self, index: int) -> bytes:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc)
            return b""
        try:
            return os.pread(fd, self.slot_size, self.offset + index * self.slot_size)
        finally:
            os.close(fd)

    def write_slot(self, index: int, data: bytes) -> None:
        if len(data) > self.slot_size:
            raise ConfigError(f"configuration ({len(data)} bytes) does not fit a "
                              f"{self.slot_size}-byte slot of {self.path}")
        fd = os.open(self.path, os.O_WRONLY)
        try:
            self._pwrite(fd, data, self.offset + index * self.slot_size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def _pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of *data* at *offset* (the one place bytes reach the medium)."""
        _pwrite_all(fd, data, offset)


class SlotStatus(enum.Enum):
    """What a slot holds."""

    VALID = "valid"
    BLANK = "blank"
    INVALID = "invalid"


@dataclass(frozen=True)
class Slot:
    """The result of reading one slot."""

    index: int
    status: SlotStatus
    seq: int = -1
    config: Config | None = None
    reason: str = ""

    @property
    def name(self) -> str:
        """``a`` or ``b``."""
        return SLOT_NAMES[self.index]


class ConfigStore:
    """Load and save a :class:`Config` on a :class:`Medium`, power-cut safe."""

    def __init__(self, medium: Medium, secret: bytes | None = None) -> None:
        self.medium = medium
        self._mac_key = _derive_key(secret) if secret else None

    def scan(self) -> list[Slot]:
        """Read and check both slots."""
        return [self._read(i) for i in range(len(SLOT_NAMES))]

    def newest(self) -> Slot | None:
        """The valid slot with the highest sequence number, or None."""
        valid = [s for s in self.scan() if s.status is SlotStatus.VALID]
        return max(valid, key=lambda s: s.seq, default=None)

    def load(self) -> Config:
        """The newest valid configuration; an empty Config if nothing was ever saved.

        A ConfigError if something was written but no slot is valid.
        """
        slots = self.scan()
        valid = [s for s in slots if s.status is SlotStatus.VALID]
        for s in slots:
            if s.status is SlotStatus.INVALID:
                log.warning("ignoring config %s: %s", self.medium.describe(s.index), s.reason)
        if valid:
            best = max(valid, key=lambda s: s.seq)
            log.info("config from %s (sequence %d)", self.medium.describe(best.index), best.seq)
            assert best.config is not None
            return best.config
        if all(s.status is SlotStatus.BLANK for s in slots):
            return Config()
        reasons = "; ".join(f"slot {s.name}: {s.reason}" for s in slots
                            if s.status is SlotStatus.INVALID)
        raise ConfigError(f"no valid configuration stored ({reasons}); "
                          "configure the board again and save")

    def save(self, config: Config) -> Slot:
        """Write *config* to the slot not holding the newest valid one; return that slot."""
        newest = self.newest()
        index = 0 if newest is None else 1 - newest.index
        seq = 1 if newest is None else newest.seq + 1
        record = self.encode(config, seq)
        try:
            self.medium.write_slot(index, record)
        except OSError as exc:
            raise ConfigError(f"cannot write {self.medium.describe(index)}: "
                              f"{exc.strerror or exc}") from None
        slot = self._read(index)
        if slot.status is not SlotStatus.VALID or slot.seq != seq or slot.config != config:
            raise ConfigError(f"{self.medium.describe(index)} did not read back what was "
                              f"written ({slot.reason or 'different content'})")
        log.info("config saved to %s (sequence %d)", self.medium.describe(index), seq)
        return slot

    def encode(self, config: Config, seq: int) -> bytes:
        """The slot record for *config* with sequence number *seq*."""
        payload = config.to_text().encode("utf-8")
        if len(payload) > MAX_PAYLOAD:
            raise ConfigError(f"configuration too large ({len(payload)} bytes)")
        flags = FLAG_HMAC if self._mac_key else 0
        body = HEADER.pack(MAGIC, seq, flags, len(payload)) + payload
        if self._mac_key:
            body += _hmac(self._mac_key, body)
        return body + CRC.pack(zlib.crc32(body))

    def _read(self, index: int) -> Slot:
        data = self.medium.read_slot(index)
        if _blank(data):
            return Slot(index, SlotStatus.BLANK)
        try:
            seq, config = self._decode(data)
        except ConfigError as exc:
            return Slot(index, SlotStatus.INVALID, reason=str(exc))
        return Slot(index, SlotStatus.VALID, seq=seq, config=config)

    def _decode(self, data: bytes) -> tuple[int, Config]:
        if len(data) < HEADER.size + CRC.size:
            raise ConfigError("truncated header")
        magic, seq, flags, length = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ConfigError("not a config slot (bad magic)")
        if flags & ~KNOWN_FLAGS:
            raise ConfigError(f"unknown flags {flags:#x} (written by a newer version?)")
        if length > MAX_PAYLOAD:
            raise ConfigError("bad payload length")
        end = HEADER.size + length + (TAG_SIZE if flags & FLAG_HMAC else 0)
        if len(data) < end + CRC.size:
            raise ConfigError("truncated record")
        (crc,) = CRC.unpack_from(data, end)
        if zlib.crc32(data[:end]) != crc:
            raise ConfigError("CRC mismatch (torn or damaged write)")
        self._authenticate(data, flags, end)
        try:
            text = data[HEADER.size:HEADER.size + length].decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError("payload is not UTF-8") from None
        return seq, Config.from_text(text)

    def _authenticate(self, data: bytes, flags: int, end: int) -> None:
        if self._mac_key is None:
            return
        if not flags & FLAG_HMAC:
            raise ConfigError("not authenticated (no HMAC tag) but this board requires it")
        body, tag = data[:end - TAG_SIZE], data[end - TAG_SIZE:end]
        if not _hmac_ok(self._mac_key, body, tag):
            raise ConfigError("HMAC tag does not match this board's secret")


def open_store(location: Path, secret: bytes | None = None) -> ConfigStore:
    """A store in a directory (boot partition) or a raw area (file or block device)."""
    try:
        mode = location.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"config location {location}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        return ConfigStore(DirectoryMedium(location), secret)
    return ConfigStore(RawMedium(location), secret)


def _blank(data: bytes) -> bool:
    """Never written: missing, or erased to all 0x00 / all 0xFF."""
    return not data.strip(b"\x00") or not data.strip(b"\xff")


def _derive_key(secret: bytes) -> bytes:
    return hkdf_sha256(secret, HKDF_INFO, SHA256_LEN)


def hkdf_sha256(ikm: bytes, info: bytes, length: int, salt: bytes = b"") -> bytes:
    """HKDF-SHA256 (RFC 5869): extract with ``salt`` (none: HashLen zeros), then expand."""
    if not 0 < length <= 255 * SHA256_LEN:
        raise ValueError(f"HKDF-SHA256 makes 1 to {255 * SHA256_LEN} bytes, not {length}")
    prk = hmac.digest(salt or bytes(SHA256_LEN), ikm, "sha256")
    okm, block = b"", b""
    for counter in range(1, -(-length // SHA256_LEN) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        okm += block
    return okm[:length]


def _hmac(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")


def _hmac_ok(key: bytes, body: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(_hmac(key, body), tag)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def fsync_dir(path: Path) -> None:
    """Make a rename in directory *path* durable (fsync the directory itself)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
