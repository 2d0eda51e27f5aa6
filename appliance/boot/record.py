"""``python3 -m appliance.boot.record DIR``: the build-time files of the boot's imports.

Run by the image builder on the board's own Python (qemu-user): imports the boot's
modules once, recording what they compile (:mod:`appliance.boot.precompiled`), then
where each of them was found (:mod:`appliance.boot.module_index`), and writes both files
into DIR (the initramfs's ``appliance/boot``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from appliance.boot import module_index, precompiled


def main(argv: list[str]) -> int:
    """Write the stored code and the module index, under the names the boot loads them
    by, into the directory ``argv[0]``; 2 with a usage line when it is not one."""
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: python3 -m appliance.boot.record DIR (an existing directory)",
              file=sys.stderr)
        return 2
    out = Path(argv[0])
    (out / precompiled.CODE_FILE.name).write_bytes(precompiled.record())
    (out / module_index.INDEX_FILE.name).write_bytes(module_index.record())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
