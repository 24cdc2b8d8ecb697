"""Read the guest data of a VMDK hosted sparse extent: monolithicSparse, the extents of
twoGbMaxExtentSparse, and streamOptimized in all three layouts (design.md §3).

Header, footer and marker decoding is ``manifestkit.images.vmdk``'s; this module walks the grain
directory (GD) and grain tables (GT) — VMDK spec "Grain Directories and Grain Tables":
a GD entry is the sector of a GT (0: the whole GT is unallocated); a GT entry is the sector of a
grain (0: unallocated, 1: a zeroed grain — spec "zeroed-grain GTE"), for compressed extents the
sector of the grain marker (u64 lba, u32 size, deflated data). Every table entry is checked against
the file size before it is used, so a corrupt table gives an ``ImageError``, never a garbage read.
"""

from __future__ import annotations

import functools
import struct
from array import array
from collections.abc import Iterator

from manifestkit.compression import InflateError, inflate
from manifestkit.errors import ConversionError, ImageError
from manifestkit.images import vmdk
from manifestkit.images.blocks.disk import (
    SECTOR,
    Extent,
    ExtentKind,
    OneFileDisk,
    coalesce,
    file_size,
)

_ZEROED_GTE = 1
_FIX = "the image is damaged; copy it again or re-export it from the hypervisor"
#: grain tables kept in memory while reading (2 KiB each for 512-entry tables)
_GT_CACHE = 256


class SparseExtentDisk(OneFileDisk):
    """One hosted sparse extent file read as a disk of ``capacity`` bytes."""

    def _error(self, what: str) -> ImageError:
        return ImageError(f"{self.path}: {what}", fix=_FIX)

    def _open(self) -> None:
        self.file_bytes = file_size(self._fd)
        try:
            header = vmdk.parse_sparse_header(self._pread(0, SECTOR, "the VMDK header"))
            vmdk.check_sparse_header(header, self.file_bytes)
            if header.gd_offset == vmdk.GD_AT_END:
                # streamOptimized, VMware layout: the real header is the footer at EOF-1024,
                # behind a footer marker at EOF-1536 (spec "Stream-Optimized ... Footer")
                if self.file_bytes < 3 * SECTOR:
                    raise self._error("the grain directory is 'at the end' but there is no footer")
                marker = vmdk.parse_marker(
                    self._pread(self.file_bytes - 3 * SECTOR, SECTOR, "footer")
                )
                if marker.is_grain or marker.type != vmdk.MARKER_FOOTER:
                    raise self._error("no footer marker before the footer: the stream is truncated")
                header = vmdk.parse_sparse_header(
                    self._pread(self.file_bytes - 2 * SECTOR, SECTOR, "the VMDK footer")
                )
                vmdk.check_sparse_header(header, self.file_bytes, allow_gd_at_end=False)
        except ImageError as exc:
            if exc.message.startswith(self.path):
                raise
            raise ImageError(f"{self.path}: {exc.message}", fix=exc.fix) from exc
        self.header = header
        self._refuse_delta_disk()
        self.capacity = header.capacity * SECTOR
        self.grain_bytes = header.grain_bytes
        self.gtes = header.num_gtes_per_gt
        self.compressed = header.compressed
        if self.compressed and header.compress_algorithm != vmdk.COMPRESSION_DEFLATE:
            raise self._error(
                f"compressed grains with unknown algorithm {header.compress_algorithm}"
            )
        try:
            self._gd = self._directory(header.gd_offset, "grain directory")
        except ImageError:
            # the redundant GD (flag 0x2; monolithicSparse from VMware and qemu) points to its own
            # copies of every grain table: use it when the primary one is damaged
            if not header.flags & vmdk.FLAG_REDUNDANT_GD or not header.rgd_offset:
                raise
            try:
                self._gd = self._directory(header.rgd_offset, "redundant grain directory")
            except ImageError:
                pass
            else:
                self.used_redundant_gd = True
            if not self.used_redundant_gd:
                raise
        self._table = functools.lru_cache(maxsize=_GT_CACHE)(self._load_table)

    used_redundant_gd = False

    def _refuse_delta_disk(self) -> None:
        """A snapshot (VMware ``-000001.vmdk``) is a sparse extent holding only the changed grains;
        converting it alone would silently drop the rest of the disk. Its embedded descriptor names
        a parent (parentCID other than ffffffff)."""
        h = self.header
        if not h.descriptor_offset or not h.descriptor_size:
            return  # an extent of a descriptor-only disk: that descriptor was checked
        raw = self._pread(h.descriptor_offset * SECTOR, h.descriptor_size * SECTOR, "descriptor")
        try:
            descriptor = vmdk.parse_descriptor(vmdk.decode_descriptor(raw))
        except ImageError:
            return  # the data can still be read; inspect reports the damaged descriptor
        parent = descriptor.parent_cid
        if parent is not None and parent.lower() != "ffffffff":
            raise ConversionError(
                f"{self.path}: is a snapshot (delta) disk that needs its parent disk",
                fix="consolidate the snapshots in the hypervisor, or convert the parent chain "
                "with qemu-img convert -O vmdk -o subformat=streamOptimized",
            )

    def _directory(self, sector: int, what: str) -> array:
        """The GD at ``sector``, every entry checked to point inside the file."""
        gd_bytes = 4 * self.header.num_gd_entries  # at most vmdk.MAX_GD_BYTES (header check)
        if sector * SECTOR + gd_bytes > self.file_bytes:
            raise self._error(
                f"the {what} ({self.header.num_gd_entries} entries at sector {sector}) runs past "
                f"the end of the file ({self.file_bytes} bytes): truncated file"
            )
        raw = self._pread(sector * SECTOR, gd_bytes, f"the {what}")
        gd = array("I")
        gd.frombytes(raw)
        if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
            gd.byteswap()
        table_bytes = 4 * self.gtes
        for index, table in enumerate(gd):
            if table and table * SECTOR + table_bytes > self.file_bytes:
                raise self._error(
                    f"{what} entry {index} points to sector {table}, outside the file "
                    f"({self.file_bytes} bytes): corrupt {what} or truncated file"
                )
        return gd

    def _load_table(self, index: int) -> array:
        """Grain table ``index`` with every entry checked; an empty table when its GD entry is 0."""
        table = array("I")
        sector = self._gd[index]
        if not sector:
            return table
        table.frombytes(self._pread(sector * SECTOR, 4 * self.gtes, f"grain table {index}"))
        if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
            table.byteswap()
        # an uncompressed grain must lie wholly in the file; a compressed one needs its marker
        need = SECTOR if self.compressed else self.grain_bytes
        limit = self.file_bytes - need
        first_grain = self.header.overhead
        for i, entry in enumerate(table):
            if _ZEROED_GTE < entry < first_grain:
                raise self._error(
                    f"grain table {index} entry {i} points to sector {entry}, inside the header "
                    f"and tables (grains start at sector {first_grain}): corrupt grain table"
                )
            if entry > _ZEROED_GTE and entry * SECTOR > limit:
                grain = index * self.gtes + i
                if (
                    not self.compressed
                    and grain * self.grain_bytes + self.grain_bytes > self.capacity
                ):
                    # the last grain of a disk that is not a grain multiple may be stored short
                    short = self.capacity - grain * self.grain_bytes
                    if entry * SECTOR + short <= self.file_bytes:
                        continue
                raise self._error(
                    f"grain table {index} entry {i} points to sector {entry}, past the end of the "
                    f"file ({self.file_bytes} bytes): corrupt grain table or truncated file"
                )
        return table

    def _entry(self, grain: int) -> int:
        table = self._table(grain // self.gtes)
        return table[grain % self.gtes] if table else 0

    def extents(self) -> Iterator[Extent]:
        return coalesce(self._scan())

    def _scan(self) -> Iterator[Extent]:
        span = self.grain_bytes * self.gtes
        for index in range(len(self._gd)):
            base = index * span
            if base >= self.capacity:
                return
            table = self._table(index)
            if not table or not any(table):
                yield Extent(base, min(span, self.capacity - base), ExtentKind.UNALLOCATED)
                continue
            for i, entry in enumerate(table):
                offset = base + i * self.grain_bytes
                if offset >= self.capacity:
                    return
                kind = (
                    ExtentKind.UNALLOCATED
                    if entry == 0
                    else ExtentKind.ZERO
                    if entry == _ZEROED_GTE
                    else ExtentKind.DATA
                )
                yield Extent(offset, min(self.grain_bytes, self.capacity - offset), kind)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.capacity:
            raise ValueError(f"read of {length} bytes at {offset} outside the disk")
        parts: list[bytes] = []
        end = offset + length
        pos = offset
        while pos < end:
            grain = pos // self.grain_bytes
            within = pos - grain * self.grain_bytes
            take = min(self.grain_bytes - within, end - pos)
            entry = self._entry(grain)
            if entry <= _ZEROED_GTE:
                parts.append(bytes(take))
            elif self.compressed:
                parts.append(self._inflate(grain, entry)[within : within + take])
            else:
                parts.append(self._pread(entry * SECTOR + within, take, f"grain {grain}"))
            pos += take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _inflate(self, grain: int, sector: int) -> bytes:
        """The data of compressed grain ``grain`` whose marker (or data) starts at ``sector``."""
        at = sector * SECTOR
        wanted = min(self.grain_bytes, self.capacity - grain * self.grain_bytes)
        if self.header.has_markers:
            marker = vmdk.parse_marker(self._pread(at, SECTOR, f"grain marker of grain {grain}"))
            lba = grain * self.header.grain_size
            if not marker.is_grain or marker.value != lba:
                found = f"a marker for lba {marker.value}" if marker.is_grain else "no grain marker"
                raise self._error(
                    f"grain table points grain {grain} (lba {lba}) to sector {sector}, which holds "
                    f"{found}: corrupt grain table"
                )
            end = at + vmdk.GRAIN_MARKER_HEAD + marker.size
            if marker.size > 2 * self.grain_bytes + 1024 or end > self.file_bytes:
                raise self._error(
                    f"grain {grain} at byte {at}: compressed size {marker.size} runs past the end "
                    "of the file or is absurd: truncated or corrupt stream"
                )
            data = self._pread(at + vmdk.GRAIN_MARKER_HEAD, marker.size, f"grain {grain}")
        else:  # compressed without markers: the size is not stored, inflate what is there
            data = self._pread(
                at, min(2 * self.grain_bytes + 1024, self.file_bytes - at), f"grain {grain}"
            )
        try:
            out = inflate(data, self.grain_bytes)
        except InflateError as exc:
            raise self._error(f"grain {grain} at byte {at} does not inflate ({exc})") from exc
        if len(out) < wanted:
            raise self._error(
                f"grain {grain} at byte {at} inflates to {len(out)} bytes, not {wanted}: "
                "truncated or corrupt compressed data"
            )
        return out
