"""``inspect_image``: detect by content, read the one format, apply the import rules."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable
from dataclasses import replace

from manifestkit.errors import ImageError, NotImportableError
from manifestkit.images import detect as _detect_module  # noqa: F401 - ensure loaded
from manifestkit.images import raw, vhd, vmdk
from manifestkit.images.info import FORMATS, ImageInfo
from manifestkit.images.reader import FIX_TRUNCATED, ImageReader
from manifestkit.images.rules import judge
from manifestkit.images.stream import check_grain_tables, check_stream
from manifestkit.progress import Progress

# the package re-exports the function ``detect``, which hides the module of the same name
det = sys.modules["manifestkit.images.detect"]

_READERS: dict[str, Callable[[ImageReader], ImageInfo]] = {
    det.VMDK_SPARSE: vmdk.read_sparse,
    det.VMDK_DESCRIPTOR: vmdk.read_descriptor_file,
    det.VMDK_COWD: vmdk.read_cowd,
    det.VMDK_SESPARSE: vmdk.read_sesparse,
    det.VHD: vhd.read_vhd,
    det.RAW: raw.read_raw,
}


def _named(path: str, exc: ImageError) -> ImageError:
    """The same error, its message starting with the file name (parse functions do not know it)."""
    if exc.message.startswith(path + ":"):
        return exc
    return type(exc)(f"{path}: {exc.message}", fix=exc.fix)


def inspect_image(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,  # noqa: A002 - the user's --format
    deep: bool = False,
    progress: Progress | None = None,
) -> ImageInfo:
    """Facts about the image at ``path`` and whether ImportInstance takes it.

    Raises ``ImageError`` (exit 2) when the file is missing, not a regular file, unreadable, empty,
    truncated or malformed, and ``NotImportableError`` for formats EC2 has no name for (qcow2, VHDX,
    VDI). An image that parses but EC2 would refuse comes back with ``importable=False`` and
    ``problems``. ``format`` is what the user claims (``VMDK``|``VHD``|``RAW``): when it disagrees
    with the content that is a problem (exit 0: the file parses), except that ``VMDK``/``VHD`` given
    for a file with no signature at all is an ``ImageError`` (its header is damaged: exit 2). When
    the file extension disagrees it is only a warning in ``details["warnings"]``: the content
    decides, and flat extents are RAW data named ``.vmdk``.

    Without ``deep`` at most ~1 MiB of the file is read, whatever its size.
    """
    spath = os.fspath(path)
    if format is not None:
        format = format.upper()
        if format not in FORMATS:
            raise ImageError(f"{spath}: unknown --format {format!r}", fix="use VMDK, VHD or RAW")
    try:
        with ImageReader(spath) as reader:
            if reader.size == 0:
                raise ImageError(
                    f"{spath}: the file is empty (0 bytes)", fix="give the disk image file itself"
                )
            found = det.detect_reader(reader)
            if found.kind in det.ARCHIVE_FIXES:
                raise NotImportableError(
                    f"{spath}: is a {found.name}, not a disk image",
                    fix=f"{det.ARCHIVE_FIXES[found.kind]} {shlex.quote(spath)}",
                )
            if not found.ec2_format:
                raise NotImportableError(
                    f"{spath}: is a {found.name} image, a format ImportInstance does not support",
                    fix="convert it first: qemu-img convert -O vmdk -o subformat=streamOptimized "
                    f"{spath} OUT.vmdk",
                )
            if format and format != "RAW" and found.kind == det.RAW:
                raise ImageError(_no_signature(reader, format), fix=_NO_SIGNATURE_FIX)
            info = _READERS[found.kind](reader)
            details = dict(info.details)
            warnings = list(details.get("warnings", ()))
            named = det.format_from_extension(spath)
            if named and named != info.format:
                warnings.append(
                    f"the file name says {named} but the content is {info.format} "
                    f"({info.subformat}); using the content"
                )
            if format:
                details["format_given"] = format
            if deep:
                details["deep"] = _deep(reader, info, progress)
            if warnings:
                details["warnings"] = warnings
            details["bytes_read"] = reader.bytes_read
            return judge(replace(info, details=details))
    except ImageError as exc:
        raise _named(spath, exc) from None


_NO_SIGNATURE_FIX = "the file is damaged or not that format; copy it again, or drop --format"


def _no_signature(reader: ImageReader, format: str) -> str:  # noqa: A002
    """The user said VMDK/VHD, the content has no signature at all: a damaged header (exit 2)."""
    if format == "VHD":
        where = max(reader.size - 512, 0)
        found = reader.read_at(where, min(8, reader.size), what="the VHD footer")
        return f"--format VHD but there is no VHD footer cookie at byte {where} (found {found!r})"
    found = reader.read_at(0, min(4, reader.size), what="the VMDK header")
    return f"--format VMDK but the file has no VMDK header magic (found {found!r}, not b'KDMV')"


def _deep(reader: ImageReader, info: ImageInfo, progress: Progress | None) -> dict[str, object]:
    if info.details.get("kind") != det.VMDK_SPARSE or not info.details.get("markers"):
        return {"checked": False, "reason": "only streamOptimized VMDK grains are checked"}
    header = vmdk.parse_sparse_header(reader.read_at(0, vmdk.SECTOR, what="the VMDK header"))
    result = check_stream(reader, header, progress=progress)
    if info.details.get("layout") == "footer" and not (result.footer and result.end_of_stream):
        raise ImageError(
            "streamOptimized VMDK: the stream ends without its footer and end-of-stream marker",
            fix=FIX_TRUNCATED,
        )
    real, _ = vmdk.stream_layout(reader, header)
    check_grain_tables(reader, real)
    return {"checked": True, **result.to_dict()}
