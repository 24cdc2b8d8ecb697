"""Walk the markers of a streamOptimized VMDK and inflate every grain (``inspect --deep``).

Spec: VMware "Virtual Disk Format 1.1", "Stream-Optimized Compressed Sparse Extents": after the
header area (``overHead`` sectors) come sector-aligned markers: grain markers (u64 lba, u32 size,
deflate data) and metadata markers (u64 sectors, u32 0, u32 type) for grain tables, the grain
directory, the footer and the end of the stream. The walk trusts no table: it reads the stream
front to back, in fixed chunks, holding at most one chunk and one grain in memory.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from manifestkit.compression import InflateError, inflate
from manifestkit.errors import ImageError
from manifestkit.images.reader import ImageReader
from manifestkit.images.vmdk import (
    GRAIN_MARKER_HEAD,
    MARKER_EOS,
    MARKER_FOOTER,
    MARKER_GD,
    MARKER_GT,
    SECTOR,
    Marker,
    SparseHeader,
    parse_marker,
)
from manifestkit.progress import NoProgress, Progress

CHUNK_BYTES = 1 << 20
_FIX = "the stream is damaged or incomplete; copy the file again or re-export it"


@dataclass(frozen=True)
class StreamCheck:
    grains: int
    compressed_bytes: int
    inflated_bytes: int
    grain_tables: int
    grain_directories: int
    footer: bool
    end_of_stream: bool
    #: where the walk stopped (after the end-of-stream marker, or end of file)
    end_offset: int

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


class _Cursor:
    """Sequential reads over an ``ImageReader`` through one reusable chunk buffer."""

    def __init__(self, reader: ImageReader, progress: Progress) -> None:
        self._reader = reader
        self._progress = progress
        self._buf = b""
        self._start = 0

    def read(self, offset: int, n: int) -> bytes:
        """Bytes ``offset``..``offset+n`` (shorter only at end of file)."""
        end = offset + n
        if offset < self._start or end > self._start + len(self._buf):
            keep = (
                self._buf[offset - self._start :]
                if self._start <= offset < self._start + len(self._buf)
                else b""
            )
            want = max(n - len(keep), CHUNK_BYTES)
            fresh = (
                self._reader.pread(offset + len(keep), want)
                if offset + len(keep) < self._reader.size
                else b""
            )
            self._progress.advance(len(fresh))
            self._buf = keep + fresh
            self._start = offset
        return self._buf[offset - self._start : end - self._start]


def iter_markers(
    reader: ImageReader,
    start: int,
    *,
    max_grain_data: int,
    progress: Progress | None = None,
) -> Iterator[tuple[int, Marker, bytes]]:
    """Yield ``(offset, marker, compressed_data)`` for each marker from ``start`` (bytes) on.

    ``compressed_data`` is empty for metadata markers. Stops after the end-of-stream marker, or at
    the end of the file when it falls on a marker boundary; raises ``ImageError`` when a marker or
    its data is cut short, or when a grain marker claims more than ``max_grain_data`` bytes (a
    damaged u32 size must not become a 4 GiB read).
    """
    cursor = _Cursor(reader, progress or NoProgress())
    pos = start
    while pos < reader.size:
        head = cursor.read(pos, 16)
        if len(head) < 16:
            raise ImageError(
                f"truncated stream: {len(head)} bytes of a marker at byte {pos}", fix=_FIX
            )
        marker = parse_marker(head)
        if marker.is_grain:
            if marker.size > max_grain_data:
                raise ImageError(
                    f"grain marker at byte {pos} claims {marker.size} compressed bytes, more "
                    f"than a grain can take ({max_grain_data})",
                    fix=_FIX,
                )
            data = cursor.read(pos + GRAIN_MARKER_HEAD, marker.size)
            if len(data) < marker.size:
                raise ImageError(
                    f"truncated stream: the grain at byte {pos} (lba {marker.value}) needs "
                    f"{marker.size} bytes, the file ends after {len(data)}",
                    fix=_FIX,
                )
            yield pos, marker, data
            pos += -(-(GRAIN_MARKER_HEAD + marker.size) // SECTOR) * SECTOR
            continue
        yield pos, marker, b""
        if marker.type == MARKER_EOS:
            return
        if marker.type == MARKER_FOOTER:
            pos += 2 * SECTOR  # the marker, then a copy of the header
        elif marker.type in (MARKER_GT, MARKER_GD):
            pos += SECTOR + marker.value * SECTOR
        else:
            raise ImageError(f"unknown stream marker type {marker.type} at byte {pos}", fix=_FIX)
        if pos > reader.size:
            raise ImageError(
                f"truncated stream: metadata at byte {pos} runs past the end of the file", fix=_FIX
            )


def check_stream(
    reader: ImageReader, header: SparseHeader, *, progress: Progress | None = None
) -> StreamCheck:
    """Walk every marker and inflate every grain; ``ImageError`` on the first corrupt one."""
    progress = progress or NoProgress()
    grain_bytes = header.grain_bytes
    capacity_bytes = header.capacity_bytes
    # deflate can grow incompressible data a little; a size beyond this is a damaged marker
    max_compressed = grain_bytes + grain_bytes // 8 + 1024
    grains = compressed = inflated = tables = directories = 0
    footer = eos = False
    end = header.overhead * SECTOR
    progress.start(reader.size, "checking grains")
    progress.advance(end)  # header, descriptor, leading tables: read already, not walked again
    try:
        for pos, marker, data in iter_markers(
            reader, end, max_grain_data=max_compressed, progress=progress
        ):
            if not marker.is_grain:
                tables += marker.type == MARKER_GT
                directories += marker.type == MARKER_GD
                footer = footer or marker.type == MARKER_FOOTER
                eos = marker.type == MARKER_EOS
                end = pos + SECTOR
                continue
            lba = marker.value
            if lba % header.grain_size or lba * SECTOR >= capacity_bytes:
                raise ImageError(
                    f"grain marker at byte {pos} names sector {lba}, which is not a grain of this "
                    f"{header.capacity}-sector disk",
                    fix=_FIX,
                )
            expected = min(grain_bytes, capacity_bytes - lba * SECTOR)
            try:
                out = inflate(data, grain_bytes)
            except InflateError as exc:
                raise ImageError(
                    f"grain at byte {pos} (sector {lba}) does not inflate: {exc}", fix=_FIX
                ) from None
            if len(out) not in (expected, grain_bytes):
                raise ImageError(
                    f"grain at byte {pos} (sector {lba}) inflates to {len(out)} bytes, not "
                    f"{expected}",
                    fix=_FIX,
                )
            grains += 1
            compressed += marker.size
            inflated += len(out)
            end = pos + -(-(GRAIN_MARKER_HEAD + marker.size) // SECTOR) * SECTOR
    finally:
        progress.close()
    return StreamCheck(
        grains=grains,
        compressed_bytes=compressed,
        inflated_bytes=inflated,
        grain_tables=tables,
        grain_directories=directories,
        footer=footer,
        end_of_stream=eos,
        end_offset=end,
    )


def check_grain_tables(reader: ImageReader, header: SparseHeader) -> int:
    """Every grain table entry names a grain marker for its own sector that ends inside the file
    (``inspect --deep``; the marker walk alone trusts no table, so an entry of 0xFFFFFFF0 passed).

    ``header`` holds the real ``gdOffset`` (the footer's in VMware's layout). Reads the grain
    directory in chunks, one grain table and one marker head at a time. Returns the entries checked.
    """
    gtes = header.num_gtes_per_gt
    gd_entries = header.num_gd_entries
    gd_start = header.gd_offset * SECTOR
    per_chunk = CHUNK_BYTES // 4
    checked = 0
    for first in range(0, gd_entries, per_chunk):
        count = min(per_chunk, gd_entries - first)
        buf = reader.read_at(gd_start + first * 4, count * 4, what="the grain directory")
        for index, gt_sector in enumerate(struct.unpack(f"<{count}I", buf), first):
            if not gt_sector:
                continue
            table = reader.read_at(gt_sector * SECTOR, gtes * 4, what=f"grain table {index}")
            for j, sector in enumerate(struct.unpack(f"<{gtes}I", table)):
                if sector <= 1:  # unallocated, or a grain of zeros
                    continue
                lba = (index * gtes + j) * header.grain_size
                offset = sector * SECTOR
                where = f"grain table {index} puts the grain of sector {lba} at byte {offset}"
                if offset + 16 > reader.size:
                    raise ImageError(
                        f"{where}, past the end of the file ({reader.size} bytes)", fix=_FIX
                    )
                marker = parse_marker(reader.pread(offset, 16))
                if not marker.is_grain or marker.value != lba:
                    raise ImageError(f"{where}, but no grain marker for it is there", fix=_FIX)
                if offset + GRAIN_MARKER_HEAD + marker.size > reader.size:
                    raise ImageError(
                        f"{where}, and its {marker.size} compressed bytes run past the end of "
                        f"the file ({reader.size} bytes)",
                        fix=_FIX,
                    )
                checked += 1
    return checked
