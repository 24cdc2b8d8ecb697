"""Read a descriptor-only VMDK (monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs): the guest disk is
its extents laid end to end (VMDK spec "The Descriptor File", extent descriptions).

Extent file names are resolved relative to the descriptor's folder and must stay inside it (also
after following symlinks): a descriptor from an untrusted archive must not make us read, and then
upload, ``../../home/user/.ssh/id_rsa``.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator

from manifestkit.errors import ConversionError, ImageError
from manifestkit.images import vmdk
from manifestkit.images.blocks.disk import SECTOR, Extent, ExtentKind, VirtualDisk, coalesce
from manifestkit.images.blocks.raw import FileRegion
from manifestkit.images.blocks.vmdk_sparse import SparseExtentDisk

_FLAT_TYPES = ("FLAT", "VMFS")


class ZeroRegion:
    """A ZERO extent: no file, all zeros."""

    def __init__(self, length: int) -> None:
        self.capacity = length
        self.files: tuple[str, ...] = ()

    def extents(self) -> Iterator[Extent]:
        if self.capacity:
            yield Extent(0, self.capacity, ExtentKind.ZERO)

    def read(self, offset: int, length: int) -> bytes:
        return bytes(length)

    def close(self) -> None:
        pass


class _SparsePrefix:
    """The first ``length`` bytes of a sparse extent (its header may say more than the line)."""

    def __init__(self, disk: SparseExtentDisk, length: int) -> None:
        self._disk = disk
        self.capacity = length
        self.files = disk.files

    def extents(self) -> Iterator[Extent]:
        for extent in self._disk.extents():
            if extent.offset >= self.capacity:
                return
            yield Extent(
                extent.offset, min(extent.length, self.capacity - extent.offset), extent.kind
            )

    def read(self, offset: int, length: int) -> bytes:
        return self._disk.read(offset, length)

    def close(self) -> None:
        self._disk.close()


def resolve_extent_path(descriptor_path: str, name: str) -> str:
    """``name`` from an extent line as a path inside the descriptor's folder, or ``ImageError``."""
    folder = os.path.dirname(os.path.abspath(descriptor_path))
    if not name or os.path.isabs(name) or name.startswith(("/", "\\")) or ":" in name[:2]:
        raise ImageError(
            f"{descriptor_path}: extent file {name!r} is an absolute path; extent files must be in "
            "the descriptor's folder",
            fix="put the extent files next to the descriptor and name them without a folder",
        )
    candidate = os.path.normpath(os.path.join(folder, name))
    real_folder = os.path.realpath(folder)
    for path, base in ((candidate, folder), (os.path.realpath(candidate), real_folder)):
        if os.path.commonpath([path, base]) != base:
            raise ImageError(
                f"{descriptor_path}: extent file {name!r} is outside the descriptor's folder",
                fix="put the extent files next to the descriptor and name them without '..'",
            )
    if not os.path.isfile(candidate):
        raise ImageError(
            f"{descriptor_path}: extent file {name!r} is missing ({candidate})",
            fix="copy every file of the disk, not only the descriptor",
        )
    return candidate


class DescriptorDisk:
    """The extents of a descriptor file, concatenated."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            with open(path, "rb") as f:
                raw = f.read(vmdk.MAX_DESCRIPTOR_BYTES + 1)
        except OSError as exc:
            raise ImageError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        try:
            self.descriptor = vmdk.parse_descriptor(vmdk.decode_descriptor(raw))
        except ImageError as exc:
            raise ImageError(f"{path}: {exc.message}", fix=exc.fix) from exc
        parent = self.descriptor.parent_cid
        if parent is not None and parent.lower() != "ffffffff":
            raise ConversionError(
                f"{path}: is a snapshot (delta) disk that needs its parent disk",
                fix="consolidate the snapshots in the hypervisor, or convert the parent chain with "
                "qemu-img convert -O vmdk -o subformat=streamOptimized",
            )
        self._parts: list[VirtualDisk] = []
        self._starts: list[int] = []
        try:
            position = 0
            for line in self.descriptor.extents:
                part = self._open_extent(line)
                if part.capacity == 0:
                    part.close()
                    continue
                self._starts.append(position)
                self._parts.append(part)
                position += part.capacity
        except BaseException:
            self.close()
            raise
        self.capacity = position
        self.files: tuple[str, ...] = (path,) + tuple(f for p in self._parts for f in p.files)

    def _open_extent(self, line: vmdk.Extent) -> VirtualDisk:
        length = line.sectors * SECTOR
        if line.type == "ZERO":
            return ZeroRegion(length)
        if line.type not in (*_FLAT_TYPES, "SPARSE"):
            raise ConversionError(
                f"{self.path}: extent type {line.type} is not supported",
                fix="convert it with qemu-img convert -O vmdk -o subformat=streamOptimized",
            )
        extent_path = resolve_extent_path(self.path, line.filename or "")
        if line.type in _FLAT_TYPES:
            return FileRegion(extent_path, base=(line.offset or 0) * SECTOR, length=length)
        sparse = SparseExtentDisk(extent_path)
        if sparse.capacity < length:
            sparse.close()
            raise ImageError(
                f"{extent_path}: holds {sparse.capacity} bytes but the descriptor {self.path} "
                f"says {length}",
                fix="the disk's files do not belong together; copy them again",
            )
        return _SparsePrefix(sparse, length)

    def extents(self) -> Iterator[Extent]:
        return coalesce(self._shifted())

    def _shifted(self) -> Iterator[Extent]:
        for start, part in zip(self._starts, self._parts, strict=True):
            for extent in part.extents():
                yield Extent(start + extent.offset, extent.length, extent.kind)

    def read(self, offset: int, length: int) -> bytes:
        chunks: list[bytes] = []
        end = offset + length
        while offset < end:
            index = bisect.bisect_right(self._starts, offset) - 1
            part, start = self._parts[index], self._starts[index]
            take = min(end, start + part.capacity) - offset
            chunks.append(part.read(offset - start, take))
            offset += take
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        for part in self._parts:
            part.close()
        self._parts = []
