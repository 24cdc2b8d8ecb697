"""Read the guest data of a VHD: fixed (the data, then the footer) or dynamic (a block allocation
table, BAT, of blocks each led by a sector bitmap) — Microsoft "Virtual Hard Disk Image Format
Specification" v1.0, "Dynamic Disk Header Format" and "Block Allocation Table and Data Blocks".

Footer and header decoding is ``manifestkit.images.vhd``'s. A BAT entry of 0xFFFFFFFF is an
unallocated block (zeros); in an allocated block a sector whose bitmap bit is clear holds no data
(zeros in a dynamic disk). The BAT is kept as a compact ``array`` (4 bytes per 2 MiB block).
"""

from __future__ import annotations

import functools
import os
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


class DynamicVhdDisk(OneFileDisk):
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
        blocks = -(-self.capacity // self.block_bytes)
        self._bat = array("I")
        self._bat.frombytes(
            self._pread(header.table_offset, 4 * blocks, "the block allocation table")
        )
        if array("I", [1]).tobytes() != b"\0\0\0\1":
            self._bat.byteswap()  # the BAT is big-endian
        data_end = size - vhd.FOOTER_BYTES
        for index, sector in enumerate(self._bat):
            if sector == vhd.BAT_UNUSED:
                continue
            need = self._bitmap_bytes + min(
                self.block_bytes, self.capacity - index * self.block_bytes
            )
            if sector * SECTOR + need > data_end:
                raise ImageError(
                    f"{self.path}: block allocation table entry {index} points to sector {sector}, "
                    f"past the end of the data ({data_end} bytes): corrupt table or truncated file",
                    fix=_FIX,
                )
        self._runs = functools.lru_cache(maxsize=256)(self._block_runs)

    def _block_runs(self, index: int) -> tuple[tuple[int, int, bool], ...]:
        """(byte offset in block, length, present) runs of block ``index`` from its sector bitmap
        (bit 7 of byte 0 is the block's first sector: spec "Block Format")."""
        length = min(self.block_bytes, self.capacity - index * self.block_bytes)
        sector = self._bat[index]
        if sector == vhd.BAT_UNUSED:
            return ((0, length, False),)
        bitmap = self._pread(sector * SECTOR, self._bitmap_bytes, f"the bitmap of block {index}")
        sectors = -(-length // SECTOR)
        if bitmap[: sectors // 8] == b"\xff" * (sectors // 8) and all(
            bitmap[sectors // 8] & (0x80 >> b) for b in range(sectors % 8)
        ):
            return ((0, length, True),)
        runs: list[tuple[int, int, bool]] = []
        for s in range(sectors):
            present = bool(bitmap[s // 8] & (0x80 >> (s % 8)))
            start = s * SECTOR
            take = min(SECTOR, length - start)
            if runs and runs[-1][2] == present:
                runs[-1] = (runs[-1][0], runs[-1][1] + take, present)
            else:
                runs.append((start, take, present))
        return tuple(runs)

    def extents(self) -> Iterator[Extent]:
        return coalesce(self._scan())

    def _scan(self) -> Iterator[Extent]:
        for index in range(len(self._bat)):
            base = index * self.block_bytes
            for start, length, present in self._runs(index):
                kind = ExtentKind.DATA if present else ExtentKind.UNALLOCATED
                yield Extent(base + start, length, kind)

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.capacity:
            raise ValueError(f"read of {length} bytes at {offset} outside the disk")
        parts: list[bytes] = []
        end = offset + length
        while offset < end:
            index = offset // self.block_bytes
            base = index * self.block_bytes
            data_at = self._bat[index] * SECTOR + self._bitmap_bytes
            for start, run, present in self._runs(index):
                lo, hi = max(offset, base + start), min(end, base + start + run)
                if lo >= hi:
                    continue
                if present:
                    parts.append(self._pread(data_at + lo - base, hi - lo, f"block {index}"))
                else:
                    parts.append(bytes(hi - lo))
            offset = min(end, base + self.block_bytes)
        return parts[0] if len(parts) == 1 else b"".join(parts)
