"""``manifestkit inspect IMAGE``: what the image is, its sizes and parts, whether EC2 takes it."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from typing import Any

from manifestkit.cli._arguments import add_format_option
from manifestkit.cli._output import emit, plural, progress_for
from manifestkit.images import ImageInfo, inspect_image
from manifestkit.images.rules import part_size_problem
from manifestkit.parts import DEFAULT_PART_SIZE, MAX_PART_SIZE, PartPlan
from manifestkit.sizes import format_size, parse_size

log = logging.getLogger("manifestkit")


def _size(text: str) -> int:
    return parse_size(text)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "inspect",
        parents=[common],
        description="Read a VMDK, VHD or RAW image (the format comes from the content, not the "
        "name) and report its format, capacity, volume size, part count and import problems. "
        "Exit 0 when the image parses (even if it cannot be imported), 2 when it is missing, "
        "unreadable or malformed. Reads at most about 1 MiB unless --deep.",
    )
    parser.add_argument("image", metavar="IMAGE", help="the disk image file")
    add_format_option(
        parser,
        help="the format you expect; a disagreement with the content is reported as a problem",
    )
    parser.add_argument(
        "--part-size",
        default=str(DEFAULT_PART_SIZE),
        metavar="SIZE",
        help="upload part size for the part count: 10MiB, 10M or 10485760 (default 10 MiB)",
    )
    parser.add_argument(
        "--deep",
        action="store_true",
        help="also walk and inflate every grain of a streamOptimized VMDK (reads the whole file)",
    )
    parser.set_defaults(run=run)


def data_bytes(info: ImageInfo) -> int:
    """What the parts are cut from: the file, or for a descriptor-only VMDK (a few hundred bytes
    of text) the data of the extent files it names, which is what a conversion reads."""
    details = info.details
    if details.get("kind") != "vmdk-descriptor":
        return info.file_bytes
    folder = os.path.dirname(os.path.abspath(info.path))
    total = 0
    for name in details.get("extent_files", ()):
        try:
            total += os.stat(os.path.join(folder, name)).st_size
        except OSError:  # a missing extent is a problem inspect reports; count what is there
            continue
    return total or info.capacity_bytes


def _parts(info: ImageInfo, part_size: int) -> tuple[ImageInfo, int]:
    """The image judged at this part size too, and its part count: too many parts is a reason
    the image cannot be uploaded as asked (exit 0, importable false), not a usage error."""
    size = data_bytes(info)
    problem = part_size_problem(size, part_size)
    if problem is None:
        return info, PartPlan.for_file(info.path, size, part_size=part_size).count
    problems = (*info.problems, problem)
    return replace(info, problems=problems, importable=False), -(-size // part_size)


def document_for(info: ImageInfo, part_size: int, count: int) -> dict[str, Any]:
    doc = info.to_dict()
    details = doc.pop("details")
    doc["part_size"] = part_size
    doc["parts"] = count
    doc["details"] = details
    return doc


def text_for(info: ImageInfo, part_size: int, count: int) -> str:
    lines = [
        f"{info.path}",
        f"  format       {info.format} ({info.subformat})",
        f"  file size    {info.file_bytes} bytes ({format_size(info.file_bytes)})",
        f"  capacity     {info.capacity_bytes} bytes ({format_size(info.capacity_bytes)})",
        f"  volume       {info.volume_gib} GiB",
        f"  parts        {count} of {format_size(part_size)}",
    ]
    layout = info.details.get("layout")
    if layout:
        lines.append(f"  layout       {layout}")
    deep = info.details.get("deep")
    if isinstance(deep, dict) and deep.get("checked"):
        lines.append(
            f"  deep check   ok: {plural(int(deep['grains']), 'grain')} inflated to "
            f"{format_size(int(deep['inflated_bytes']))}"
        )
    elif isinstance(deep, dict):
        lines.append(f"  deep check   skipped: {deep.get('reason', 'nothing to check')}")
    lines.append(f"  importable   {'yes' if info.importable else 'no'}")
    lines.extend(f"  problem      {p}" for p in info.problems)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    part_size = _size(args.part_size)
    info = inspect_image(
        args.image,
        format=args.format,
        deep=args.deep,
        progress=progress_for(args) if args.deep else None,
    )
    for warning in info.details.get("warnings", ()):
        log.warning("%s: %s", info.path, warning)
    if not 0 < part_size <= MAX_PART_SIZE:
        PartPlan.for_file(info.path, info.file_bytes, part_size=part_size)  # its usage error
    info, count = _parts(info, part_size)
    emit(args, document_for(info, part_size, count), text_for(info, part_size, count))
    return 0
