"""The ``ImageInfo`` contract (design.md §2): the facts about one image every later step uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from manifestkit.images.rules import volume_gib_for

#: Format names as EC2 spells them in ``DiskImage.Image.Format``.
FORMATS = ("VMDK", "VHD", "RAW")

__all__ = ["FORMATS", "ImageInfo", "volume_gib_for"]


@dataclass(frozen=True)
class ImageInfo:
    path: str
    #: ``VMDK`` | ``VHD`` | ``RAW``
    format: str
    #: VMDK createType (``streamOptimized``...), VHD ``fixed``|``dynamic``|``differencing``, ``raw``
    subformat: str
    #: os.stat size: what is uploaded, ``Image.Bytes`` and manifest ``<size>``
    file_bytes: int
    #: virtual disk size
    capacity_bytes: int
    importable: bool
    #: sentences saying what is wrong and what to do; empty when importable
    problems: tuple[str, ...] = ()
    #: format-specific facts for display (header version, grain size, layout...); JSON-serialisable
    details: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def volume_gib(self) -> int:
        """The default ``Volume.Size``: it holds the disk and the file (``volume_gib_for``)."""
        return volume_gib_for(self.capacity_bytes, self.file_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "subformat": self.subformat,
            "file_bytes": self.file_bytes,
            "capacity_bytes": self.capacity_bytes,
            "volume_gib": self.volume_gib,
            "importable": self.importable,
            "problems": list(self.problems),
            "details": dict(self.details),
        }
