"""``manifestkit convert IMAGE OUTPUT.vmdk``: write the streamOptimized VMDK EC2 imports."""

from __future__ import annotations

import argparse
import logging
import os
import time

from manifestkit.cli._output import emit, progress_for
from manifestkit.errors import UsageError

log = logging.getLogger("manifestkit")

#: names that promise another format than the streamOptimized VMDK convert always writes
_OTHER_FORMATS = (".raw", ".img", ".vhd", ".vpc", ".qcow2", ".vhdx", ".vdi", ".bin", ".iso")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "convert",
        parents=[common],
        description="Convert any VMDK (monolithicSparse, monolithicFlat, twoGbMaxExtent*, "
        "streamOptimized), VHD (fixed, dynamic) or RAW image to the streamOptimized VMDK that "
        "ImportInstance accepts. The format is read from the content, not the name.",
    )
    parser.add_argument(
        "source", metavar="IMAGE", help="the image to convert, or a whole disk (/dev/sdb)"
    )
    parser.add_argument("target", metavar="OUTPUT.vmdk", help="the streamOptimized VMDK to write")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="threads that compress grains (default: one per CPU)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace OUTPUT if it exists; read a SOURCE disk even while it is mounted read-write",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from manifestkit.convert import convert_image
    from manifestkit.images import inspect_image

    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers {args.workers}: give a number of threads of at least 1")
    if args.target == "-":
        raise UsageError(
            "OUTPUT '-': convert writes a file, not stdout",
            fix="give a file name (./- for a file called '-')",
        )
    source = inspect_image(args.source)
    if os.path.splitext(args.target)[1].lower() in _OTHER_FORMATS:
        log.warning(
            "%s: convert writes a streamOptimized VMDK whatever the name says; name it .vmdk "
            "to avoid confusion",
            args.target,
        )
    started = time.monotonic()
    info = convert_image(
        args.source,
        args.target,
        workers=args.workers,
        progress=progress_for(args),
        overwrite=args.force,
        read_mounted=args.force,
    )
    seconds = time.monotonic() - started
    document = {
        "source": os.fspath(args.source),
        "source_format": source.format,
        "source_subformat": source.subformat,
        "output": info.path,
        "format": info.format,
        "subformat": info.subformat,
        "output_bytes": info.file_bytes,
        "capacity_bytes": info.capacity_bytes,
        "importable": info.importable,
        "seconds": round(seconds, 3),
    }
    emit(
        args,
        document,
        f"{info.path}: streamOptimized VMDK, {info.file_bytes} bytes for a "
        f"{info.capacity_bytes}-byte disk, written in {seconds:.1f} s",
    )
    return 0
