"""Read the guest data of a VHD: fixed (the data, then the footer) or dynamic (a block allocation
table, BAT, of blocks each led by a sector bitmap) — Microsoft "Virtual Hard Disk Image Format
Specification" v1.0, "Dynamic Disk Header Format" and "Block Allocation Table and Data Blocks".

Footer and header decoding is ``manifestkit.images.vhd``'s. A BAT entry of 0xFFFFFFFF is an
unallocated block (zeros); in an allocated block a sector whose bitmap bit is clear holds no data
(zeros in a dynamic disk). The BAT is read in chunks, never whole (``DynamicVhdDisk``).
"""

from __future__ import annotations

import functools
import os
import re
import sys
from array import array
from collections.abc import Iterator

from manifestkit.errors import ConversionError, ImageError
from manifestkit.images import vhd
from manifestkit.images.blocks.disk import (
    SECTOR,
    Extent,
    ExtentKind,
    OneFileDisk,
    coalesce,
    file_size,
    open_readonly,
    pread_exact,
)
from manifestkit.images.blocks.raw import FileRegion

_FIX = "the image is damaged; copy it again or re-export it"
_LITTLE_ENDIAN = sys.byteorder == "little"


def _footer(path: str, fd: int, size: int) -> vhd.VhdFooter:
    if size < vhd.FOOTER_BYTES:
        raise ImageError(f"{path}: too short for a VHD footer ({size} bytes)", fix=_FIX)
    try:
        footer = vhd.parse_footer(
            pread_exact(fd, vhd.FOOTER_BYTES, size - vhd.FOOTER_BYTES, path, "the VHD footer")
        )
        vhd.check_footer(footer)
    except ImageError as exc:
        if exc.message.startswith(path):
            raise
        raise ImageError(f"{path}: {exc.message}", fix=exc.fix) from exc
    return footer


def open_vhd(path: str) -> FileRegion | DynamicVhdDisk:
    fd = open_readonly(path)
    try:
        size = file_size(fd)
        footer = _footer(path, fd, size)
    finally:
        os.close(fd)
    if footer.disk_type == vhd.DISK_FIXED:
        if footer.current_size > size - vhd.FOOTER_BYTES:
            raise ImageError(
                f"{path}: fixed VHD of {footer.current_size} bytes but only "
                f"{size - vhd.FOOTER_BYTES} bytes of data in the file: truncated",
                fix=_FIX,
            )
        return FileRegion(path, base=0, length=footer.current_size)
    if footer.disk_type == vhd.DISK_DYNAMIC:
        return DynamicVhdDisk(path)
    raise ConversionError(
        f"{path}: is a differencing VHD, which needs its parent disk",
        fix="merge it into its parent first (Hyper-V: Edit Disk > Merge), then convert the result",
    )


#: BAT entries read at a time: 64 KiB of table. The table is never held whole: a 64 GiB disk of
#: 512-byte blocks has a 512 MiB one (it took 1.09 GB RSS and minutes to walk; issue 11 item 3)
BAT_CHUNK_ENTRIES = 16384
#: table chunks and block bitmaps kept for ``read`` (neighbouring reads hit the same ones)
CACHED_CHUNKS = 8
CACHED_BITMAPS = 16
_UNUSED_CHUNK = b"\xff" * (4 * BAT_CHUNK_ENTRIES)
#: runs of unused entries (0xFFFFFFFF) in a chunk's raw bytes; aligned to entries by the caller
_UNUSED_RUN = re.compile(rb"(?:\xff\xff\xff\xff)+")
#: in a sector bitmap: whole bytes of present (0xff) or absent (0x00) sectors, or a mixed byte
_BITMAP_RUN = re.compile(rb"\xff+|\x00+|[\x01-\xfe]")


class DynamicVhdDisk(OneFileDisk):
    """A dynamic VHD read through its BAT a chunk at a time; memory is bounded by
    ``CACHED_CHUNKS`` x 64 KiB of table plus ``CACHED_BITMAPS`` sector bitmaps (each at most
    block size / 4096 bytes), whatever the disk and block sizes."""

    def _open(self) -> None:
        size = file_size(self._fd)
        footer = _footer(self.path, self._fd, size)
        try:
            header = vhd.parse_dynamic_header(
                self._pread(
                    vhd.dynamic_header_offset(footer, size),
                    vhd.DYNAMIC_HEADER_BYTES,
                    "the VHD dynamic header",
                )
            )
            vhd.check_dynamic_header(header, footer, size)
        except ImageError as exc:
            if exc.message.startswith(self.path):
                raise
            raise ImageError(f"{self.path}: {exc.message}", fix=exc.fix) from exc
        self.capacity = footer.current_size
        self.block_bytes = header.block_size
        self._bitmap_bytes = header.bitmap_bytes
        self._table_offset = header.table_offset
        self._blocks = -(-self.capacity // self.block_bytes)
        self._chunk = functools.lru_cache(maxsize=CACHED_CHUNKS)(self._read_chunk)
        self._bitmap = functools.lru_cache(maxsize=CACHED_BITMAPS)(self._read_bitmap)
        self._check_table(size - vhd.FOOTER_BYTES)

    # -- the block allocation table, a chunk at a time ---------------------------------------

    def _raw_chunk(self, number: int) -> bytes:
        first = number * BAT_CHUNK_ENTRIES
        count = min(BAT_CHUNK_ENTRIES, self._blocks - first)
        return self._pread(self._table_offset + 4 * first, 4 * count, "the block allocation table")

    def _read_chunk(self, number: int) -> array:
        table = array("I")
        table.frombytes(self._raw_chunk(number))
        if _LITTLE_ENDIAN:
            table.byteswap()  # the BAT is big-endian
        return table

    def _sector(self, index: int) -> int:
        return self._chunk(index // BAT_CHUNK_ENTRIES)[index % BAT_CHUNK_ENTRIES]

    def _chunks(self) -> Iterator[tuple[int, bytes]]:
        for number in range(-(-self._blocks // BAT_CHUNK_ENTRIES)):
            yield number * BAT_CHUNK_ENTRIES, self._raw_chunk(number)

    @staticmethod
    def _allocated(raw: bytes) -> Iterator[tuple[int, int]]:
        """(position in chunk, sector) of each allocated entry; runs of unused entries are
        skipped by a regex over the bytes (C speed), so only allocated entries cost Python."""
        if raw == _UNUSED_CHUNK[: len(raw)]:
            return
        table = array("I")
        table.frombytes(raw)
        if _LITTLE_ENDIAN:
            table.byteswap()
        at = 0
        for run in _UNUSED_RUN.finditer(raw):
            # a match may begin inside an entry that ends in 0xff bytes: align it to entries
            start, end = -(-run.start() // 4), run.end() // 4
            if start >= end:
                continue
            for position in range(at, start):
                yield position, table[position]
            at = end
        for position in range(at, len(table)):
            yield position, table[position]

    def _check_table(self, data_end: int) -> None:
        """Every allocated block lies inside the data (one streamed pass over the table)."""
        for first, raw in self._chunks():
            for position, sector in self._allocated(raw):
                index = first + position
                need = self._bitmap_bytes + min(
                    self.block_bytes, self.capacity - index * self.block_bytes
                )
                if sector * SECTOR + need > data_end:
                    raise ImageError(
                        f"{self.path}: block allocation table entry {index} points to sector "
                        f"{sector}, past the end of the data ({data_end} bytes): corrupt table or "
                        "truncated file",
                        fix=_FIX,
                    )

    # -- blocks ------------------------------------------------------------------------------

    def _read_bitmap(self, index: int) -> bytes:
        return self._pread(
            self._sector(index) * SECTOR, self._bitmap_bytes, f"the bitmap of block {index}"
        )

    def _block_length(self, index: int) -> int:
        return min(self.block_bytes, self.capacity - index * self.block_bytes)

    def _runs(
        self, index: int, lo: int = 0, hi: int | None = None
    ) -> Iterator[tuple[int, int, bool]]:
        """(byte offset in block, length, present) runs of block ``index`` overlapping
        ``[lo, hi)``, from its sector bitmap (bit 7 of byte 0 is the block's first sector: spec
        "Block Format"); neighbouring runs of one kind come merged."""
        length = self._block_length(index)
        hi = length if hi is None else min(hi, length)
        if self._sector(index) == vhd.BAT_UNUSED:
            yield (lo, hi - lo, False)
            return
        bitmap = self._bitmap(index)
        sectors_hi = -(-hi // SECTOR)
        first_byte, last_byte = lo // SECTOR // 8, -(-sectors_hi // 8)
        pending: tuple[int, int, bool] | None = None
        for match in _BITMAP_RUN.finditer(bitmap, first_byte, last_byte):
            value = bitmap[match.start()]
            if value in (0, 0xFF):
                pieces: Iterator[tuple[int, int, bool]] = iter(
                    [(match.start() * 8, (match.end() - match.start()) * 8, value == 0xFF)]
                )
            else:
                pieces = ((match.start() * 8 + b, 1, bool(value & (0x80 >> b))) for b in range(8))
            for first_sector, sectors, present in pieces:
                start = max(first_sector * SECTOR, lo)
                end = min((first_sector + sectors) * SECTOR, hi)
                if start >= end:
                    continue
                if (
                    pending is not None
                    and pending[2] == present
                    and pending[0] + pending[1] == start
                ):
                    pending = (pending[0], end - pending[0], present)
                    continue
                if pending is not None:
                    yield pending
                pending = (start, end - start, present)
        if pending is not None:
            yield pending

    def extents(self) -> Iterator[Extent]:
        return coalesce(self._scan())

    def _scan(self) -> Iterator[Extent]:
        block = self.block_bytes
        for first, raw in self._chunks():
            at = first  # the first block not described yet
            for position, _ in self._allocated(raw):
                index = first + position
                if index > at:
                    yield Extent(at * block, (index - at) * block, ExtentKind.UNALLOCATED)
                base = index * block
                for start, length, present in self._runs(index):
                    kind = ExtentKind.DATA if present else ExtentKind.UNALLOCATED
                    yield Extent(base + start, length, kind)
                at = index + 1
            end = first + len(raw) // 4
            if end > at:
                length = min(end * block, self.capacity) - at * block
                yield Extent(at * block, length, ExtentKind.UNALLOCATED)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.capacity:
            raise ValueError(f"read of {length} bytes at {offset} outside the disk")
        parts: list[bytes] = []
        end = offset + length
        while offset < end:
            index = offset // self.block_bytes
            base = index * self.block_bytes
            lo, hi = offset - base, min(end - base, self.block_bytes)
            sector = self._sector(index)
            for start, run, present in self._runs(index, lo, hi):
                if present:
                    data_at = sector * SECTOR + self._bitmap_bytes + start
                    parts.append(self._pread(data_at, run, f"block {index}"))
                else:
                    parts.append(bytes(run))
            offset = base + hi
        return parts[0] if len(parts) == 1 else b"".join(parts)
