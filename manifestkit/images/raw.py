"""RAW: a byte-for-byte disk; capacity is the file size (design.md §3)."""

from __future__ import annotations

from manifestkit.images.info import ImageInfo
from manifestkit.images.reader import ImageReader


def read_raw(reader: ImageReader) -> ImageInfo:
    details: dict[str, object] = {"kind": "raw"}
    if reader.size % 512:
        details["warnings"] = [f"size {reader.size} is not a whole number of 512-byte sectors"]
    return ImageInfo(
        path=reader.path,
        format="RAW",
        subformat="raw",
        file_bytes=reader.size,
        capacity_bytes=reader.size,
        importable=True,
        details=details,
    )
