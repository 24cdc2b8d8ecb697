"""``PartPlan``: how an image file is cut into byte-range parts and where each part lives in S3.

Ranges are 0-based with an inclusive ``end`` (the manifest's ``byte-range`` convention); every part
is ``part_size`` long except the last. Keys follow the EC2 API tools' naming (design.md §2):
``{prefix}/{uuid}/{basename}.part{N}`` and ``{prefix}/{uuid}/{basename}manifest.xml``.
"""

from __future__ import annotations

import os
import uuid as uuidlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from manifestkit.errors import UsageError
from manifestkit.sizes import GiB, MiB, format_size

DEFAULT_PART_SIZE = 10 * MiB
#: S3's smallest useful part is a byte; the biggest single PUT is 5 GiB.
MAX_PART_SIZE = 5 * GiB
#: A manifest with more parts than this is a sign of a silly part size (1 TiB at 1 MiB = ~1M parts).
MAX_PARTS = 1_000_000


def key_prefix(prefix: str, upload_id: str) -> str:
    """The folder of one upload's parts and manifest: ``{prefix}/{uuid}/`` (``{uuid}/``)."""
    return f"{prefix}/{upload_id}/" if prefix else f"{upload_id}/"


@dataclass(frozen=True)
class Part:
    index: int
    start: int
    #: inclusive
    end: int
    key: str

    @property
    def size(self) -> int:
        return self.end - self.start + 1


@dataclass(frozen=True)
class PartPlan:
    file_bytes: int
    part_size: int
    basename: str
    prefix: str = ""
    upload_id: str = field(default_factory=lambda: str(uuidlib.uuid4()))

    def __post_init__(self) -> None:
        if self.file_bytes <= 0:
            raise UsageError("cannot plan parts for an empty file")
        if not 0 < self.part_size <= MAX_PART_SIZE or self.count > MAX_PARTS:
            smallest = max(1, -(-self.file_bytes // MAX_PARTS))
            problem = (
                f"gives {self.count} parts (at most {MAX_PARTS})"
                if 0 < self.part_size <= MAX_PART_SIZE
                else "is out of range"
            )
            raise UsageError(
                f"part size {self.part_size} ({format_size(self.part_size)}) {problem}",
                fix=f"for this {format_size(self.file_bytes)} image give a --part-size between "
                f"{format_size(smallest)} and {format_size(MAX_PART_SIZE)}",
            )
        if not self.basename or "/" in self.basename:
            raise UsageError(f"invalid basename {self.basename!r}")
        for what, value in (("prefix", self.prefix), ("upload id", self.upload_id)):
            # URL paths get /./ and /../ resolved (RFC 3986 §5.2.4): another key than the signed one
            if {".", ".."} & set(value.split("/")):
                raise UsageError(
                    f"{what} {value!r} has a '.' or '..' folder",
                    fix="choose one without them (HTTP clients would resolve them away)",
                )

    @classmethod
    def for_file(
        cls,
        path: str | os.PathLike[str],
        file_bytes: int,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        prefix: str = "",
        upload_id: str | None = None,
    ) -> PartPlan:
        kwargs = {"upload_id": upload_id} if upload_id else {}
        return cls(
            file_bytes=file_bytes,
            part_size=part_size,
            basename=os.path.basename(os.fspath(path)),
            prefix=prefix.strip("/"),
            **kwargs,
        )

    @property
    def count(self) -> int:
        return -(-self.file_bytes // self.part_size)

    @property
    def key_prefix(self) -> str:
        return key_prefix(self.prefix, self.upload_id)

    @property
    def manifest_key(self) -> str:
        return f"{self.key_prefix}{self.basename}manifest.xml"

    def part(self, index: int) -> Part:
        if not 0 <= index < self.count:
            raise IndexError(index)
        start = index * self.part_size
        end = min(start + self.part_size, self.file_bytes) - 1
        return Part(index, start, end, f"{self.key_prefix}{self.basename}.part{index}")

    def __iter__(self) -> Iterator[Part]:
        return (self.part(i) for i in range(self.count))

    def __len__(self) -> int:
        return self.count
