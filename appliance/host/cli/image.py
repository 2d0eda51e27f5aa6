"""``appliance image``: build the boot artefacts (kernel, DTBs, initramfs, root, SD card)."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from appliance.host.cli import absolute_path


def register(subparsers: Any) -> None:
    """Add ``image build`` to the command line."""
    parser = subparsers.add_parser(
        "image", help="build the boot image (kernel, initramfs, NBD root, SD card)",
        description="Build the board's boot artefacts from Debian armhf packages.")
    sub = parser.add_subparsers(dest="image_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build", help="build (or reuse, if nothing changed) every artefact",
        description="Build vmlinuz, the DTBs, initramfs.cpio.gz (and the reference "
        "initramfs-baseline.cpio.gz of 'appliance bench board'), the two NBD roots "
        "(rootfs.ext4: busybox minbase; debian.ext4: Debian with systemd, the demo's "
        "default), boot.scr and sdcard.img with mmdebstrap from Debian armhf packages. "
        "The result is cached by "
        "content: a second run with the same package list, builder and agent sources "
        "returns at once. Set SOURCE_DATE_EPOCH to change the timestamps in the artefacts.")
    build.add_argument("--out", type=absolute_path, default="out", metavar="DIR",
                       help="output directory (default: ./out)")
    build.add_argument("--suite", default="stable",
                       help="Debian suite to fetch from (default: stable, i.e. trixie)")
    build.add_argument("--cache", type=absolute_path, default=None, metavar="DIR",
                       help="download cache for .deb files "
                       "(default: ~/.cache/nbdroot-imx6/apt-archives)")
    build.add_argument("--no-rootfs", action="store_true",
                       help="skip the NBD root filesystem images")
    build.add_argument("--no-sdcard", action="store_true", help="skip the SD-card image")
    build.add_argument("--force", action="store_true", help="rebuild even if up to date")
    build.set_defaults(func=run_build)


def _report(line: str) -> None:
    print(f"==> {line}", file=sys.stderr, flush=True)


def run_build(args: argparse.Namespace) -> int:
    """Build the image and print where everything went."""
    from image import build

    opts = build.Options(out=args.out, suite=args.suite, rootfs=not args.no_rootfs,
                         sdcard=not args.no_sdcard, force=args.force)
    if args.cache is not None:
        opts.cache = args.cache
    start = time.monotonic()
    info = build.build(opts, _report)
    artefacts: dict[str, dict[str, Any]] = info["artefacts"]  # type: ignore[assignment]
    for name, meta in sorted(artefacts.items()):
        print(f"{args.out / name}  {meta['size'] / 2**20:8.1f} MiB")
    _report(f"done in {time.monotonic() - start:.1f} s")
    return 0
