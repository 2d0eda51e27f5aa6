"""The image's content list: parsing ``image/packages.txt`` into an :class:`ImageSpec`.

The file has INI-like sections (``[initramfs]``, ``[rootfs]``, ``[debian]``, ``[modules]``,
``[dtbs]``, ``[baseline]``),
one name per line, ``#`` comments.  It is the only place the image's Debian packages
and kernel modules are named.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.errors import ImageError

PACKAGE_LIST = Path(__file__).with_name("packages.txt")
SECTIONS = ("initramfs", "rootfs", "debian", "modules", "dtbs", "baseline")


@dataclass(frozen=True)
class ImageSpec:
    """What goes into the image, as named in the package list."""

    initramfs_packages: tuple[str, ...]
    rootfs_packages: tuple[str, ...]
    modules: tuple[str, ...]
    dtbs: tuple[str, ...]
    debian_packages: tuple[str, ...] = ()  # the systemd root (image/rootfs.py)
    baseline_packages: tuple[str, ...] = ()  # the reference initramfs (image/baseline.py)


def parse(text: str, source: str = "packages.txt") -> ImageSpec:
    """Parse the package list's text; ImageError names the line of any mistake."""
    found: dict[str, list[str]] = {name: [] for name in SECTIONS}
    current: list[str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            name = line[1:-1].strip()
            if name not in found:
                raise ImageError(f"{source}:{number}: unknown section [{name}] "
                                 f"(expected one of {', '.join(SECTIONS)})")
            current = found[name]
        elif current is None:
            raise ImageError(f"{source}:{number}: {line!r} is outside any section")
        elif " " in line:
            raise ImageError(f"{source}:{number}: one name per line, got {line!r}")
        else:
            current.append(line)
    for name in ("initramfs", "modules", "dtbs"):
        if not found[name]:
            raise ImageError(f"{source}: section [{name}] is missing or empty")
    return ImageSpec(tuple(found["initramfs"]), tuple(found["rootfs"]),
                     tuple(found["modules"]), tuple(found["dtbs"]), tuple(found["debian"]),
                     tuple(found["baseline"]))


def load(path: Path = PACKAGE_LIST) -> ImageSpec:
    """Read and parse the package list at ``path``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ImageError(f"cannot read the package list {path}: {exc.strerror}") from exc
    return parse(text, str(path))
