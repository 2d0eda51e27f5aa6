"""Building the boot image once per test session, for the image and system tests.

``appliance image build`` caches by content, so the first session on a machine builds
(a few minutes) and later ones reuse ``./out`` (or ``$NBDROOT_IMAGE_OUT``).  The result
is memoised in this process, so every conftest asking for it shares one build.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

from appliance.errors import ImageError
from image import build

REPO = Path(__file__).resolve().parent.parent


@functools.cache
def built_image_dir() -> Path:
    """The directory holding a complete, up-to-date build (built now if needed)."""
    out = Path(os.environ.get("NBDROOT_IMAGE_OUT", REPO / "out"))
    try:
        build.build(build.Options(out=out), lambda line: print(f"image: {line}",
                                                               file=sys.stderr))
    except ImageError as exc:
        raise RuntimeError(f"appliance image build failed: {exc}") from exc
    return out


def debugfs(image: Path, request: str, *, write: bool = False) -> str:
    """One debugfs request on an ext4 image (``write``: open it read-write)."""
    argv = ["debugfs", *(["-w"] if write else []), "-R", request, str(image)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout
