"""Golden image versions: imported once, then never modified or deleted while in use.

``appliance golden import IMAGE`` converts IMAGE (raw or qcow2, anything ``qemu-img``
reads) to a sparse raw file ``golden/V/image.raw`` (V = 1, 2, ...), records its size,
SHA-256 and mtime in ``version.json`` and makes it mode 0444.  Boards' qcow2 overlays name
it as their backing file, and read-only boards are served it directly; a board moves to
another version only through ``fleet add/reset --golden V``.  Before anything uses a
version, :func:`check_unchanged` compares size and mtime with the record, so an overlay
is never served on top of a base that was changed behind the fleet's back;
``appliance golden verify`` re-hashes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ConfigError, UsageError

from .state import Fleet, private_dir, read_json, write_json

CHUNK = 1 << 20


@dataclass(frozen=True)
class Version:
    """One golden version and what was recorded when it was imported."""

    number: int
    image: Path
    size: int
    sha256: str
    mtime_ns: int
    source: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def versions(fleet: Fleet) -> list[Version]:
    """Every golden version, oldest first."""
    root = fleet.root / "golden"
    numbers = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) \
        if root.is_dir() else []
    return [version(fleet, n) for n in numbers]


def version(fleet: Fleet, number: int) -> Version:
    """Golden version ``number``, or a one-line error listing what exists."""
    d = fleet.root / "golden" / str(number)
    if not (d / "version.json").exists():
        have = ", ".join(str(v.number) for v in versions(fleet)) or "none"
        raise UsageError(f"no golden version {number} (have: {have}; "
                         "appliance golden import IMAGE adds one)")
    data = read_json(d / "version.json")
    try:
        return Version(number, d / "image.raw", int(data["size"]), str(data["sha256"]),
                       int(data["mtime_ns"]), str(data["source"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{d / 'version.json'}: bad record ({exc})") from None


def latest(fleet: Fleet) -> Version:
    have = versions(fleet)
    if not have:
        raise UsageError(f"{fleet.root} has no golden image yet: appliance golden import IMAGE")
    return have[-1]


def check_unchanged(v: Version) -> Version:
    """``v`` if its image still has the recorded size and mtime; else a one-line error."""
    try:
        st = v.image.stat()
    except OSError as exc:
        raise ConfigError(f"golden version {v.number}: {v.image}: {exc.strerror}") from None
    if st.st_size != v.size or st.st_mtime_ns != v.mtime_ns:
        raise ConfigError(f"golden version {v.number} was modified after import ({v.image}); "
                          "the boards on it cannot be served: import the image as a new "
                          "version and 'appliance fleet reset NAME --golden V'")
    return v


def import_image(fleet: Fleet, source: Path) -> Version:
    """Add ``source`` as the next golden version (sparse raw, 0444)."""
    from image.run import run

    if not source.is_file():
        raise UsageError(f"{source}: not a file")
    fleet.ensure()
    have = versions(fleet)
    number = have[-1].number + 1 if have else 1
    tmp = private_dir(fleet.root / "golden" / f".{number}.tmp{os.getpid()}")
    try:
        image = tmp / "image.raw"
        run(["qemu-img", "convert", "-O", "raw", str(source.absolute()), str(image)],
            timeout=3600)
        os.chmod(image, 0o444)
        st = image.stat()
        write_json(tmp / "version.json", {"size": st.st_size, "sha256": sha256_file(image),
                                          "mtime_ns": st.st_mtime_ns,
                                          "source": str(source.absolute())})
        os.chmod(tmp, 0o500)
        os.rename(tmp, fleet.root / "golden" / str(number))
    except BaseException:
        remove_tree(tmp)
        raise
    return version(fleet, number)


def in_use(fleet: Fleet, number: int) -> list[str]:
    """Names of the boards on golden version ``number``."""
    return [b.name for b in fleet.boards() if b.golden == number]


def remove(fleet: Fleet, number: int) -> None:
    """Delete golden version ``number``; refused while any board uses it."""
    v = version(fleet, number)
    users = in_use(fleet, number)
    if users:
        raise UsageError(f"golden version {number} is in use by {', '.join(users)}: "
                         "move them first (appliance fleet reset NAME --golden V)")
    remove_tree(v.image.parent)


def verify(v: Version) -> bool:
    """True if the image's SHA-256 is still the one recorded at import."""
    return sha256_file(check_unchanged(v).image) == v.sha256


def remove_tree(path: Path) -> None:
    """``rm -rf`` for our own read-only trees (golden versions are 0500/0444)."""
    if not path.exists():
        return
    for d, _, _ in os.walk(path):
        os.chmod(d, 0o700)
    shutil.rmtree(path)
