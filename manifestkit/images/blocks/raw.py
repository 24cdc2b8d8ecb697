"""A byte range of one file read as disk data: RAW images, VMDK FLAT extents, fixed VHDs.

Holes are found with ``SEEK_DATA``/``SEEK_HOLE`` (lseek(2)) so a thin RAW file or a sparse
monolithicFlat extent costs only its allocated bytes; where the filesystem cannot say, the whole
range is data.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator

from manifestkit.errors import ImageError
from manifestkit.images.blocks.disk import Extent, ExtentKind, OneFileDisk, coalesce, file_size


class FileRegion(OneFileDisk):
    """``length`` bytes of ``path`` starting at ``base``, seen as a disk of that size."""

    def __init__(self, path: str, *, base: int = 0, length: int | None = None) -> None:
        self.base = base
        self._length = length
        super().__init__(path)

    def _open(self) -> None:
        size = file_size(self._fd)
        base = self.base
        self.capacity = size - base if self._length is None else self._length
        if base < 0 or self.capacity < 0 or base + self.capacity > size:
            raise ImageError(
                f"{self.path}: the file holds {size} bytes but {base + self.capacity} are needed "
                f"(data from byte {base}, {self.capacity} bytes); it is truncated"
            )

    def extents(self) -> Iterator[Extent]:
        return coalesce(self._scan())

    def _scan(self) -> Iterator[Extent]:
        start, end = self.base, self.base + self.capacity
        pos = start
        while pos < end:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole from here to EOF
                    yield Extent(pos - start, end - pos, ExtentKind.UNALLOCATED)
                    return
                yield Extent(pos - start, end - pos, ExtentKind.DATA)  # no hole support
                return
            data = min(data, end)
            if data > pos:
                yield Extent(pos - start, data - pos, ExtentKind.UNALLOCATED)
            if data >= end:
                return
            try:
                hole = min(os.lseek(self._fd, data, os.SEEK_HOLE), end)
            except OSError:
                hole = end
            yield Extent(data - start, hole - data, ExtentKind.DATA)
            pos = hole

    def read(self, offset: int, length: int) -> bytes:
        return self._pread(self.base + offset, length, "data")
