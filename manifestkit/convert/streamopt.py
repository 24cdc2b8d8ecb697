"""Write a streamOptimized VMDK in one sequential pass (VMware's layout, design.md §3 layout (a)).

File layout, as VMware's own tools write it (VMDK spec "Stream-Optimized Compressed Sparse
Extents"), every item aligned to a 512-byte sector::

    header (gdOffset = GD_AT_END) | embedded descriptor
    grain marker + deflated grain ...          (only grains holding a non-zero byte, in LBA order)
    GT marker (type 1) + grain table           (after the last grain it indexes; empty GTs omitted)
    ... more grains and tables ...
    GD marker (type 2) + grain directory
    footer marker (type 3) + footer            (the header again, with the real gdOffset)
    end-of-stream marker (type 0)

Nothing is ever written twice: ``StreamOptimizedStream`` yields the file as a sequence of byte
chunks, write-once, which ``write_stream_optimized`` writes to a file and the streamed upload
(``manifestkit.s3.stream_parts``) cuts into parts without any file. Grains are deflated by a
thread pool (libdeflate and zlib release the GIL: ``manifestkit.compression``); results are
yielded in submission order. Incompressible grains are stored (level 0) instead of deflated: see
``deflate_grain``.

Deterministic output: given the same disk contents, ``name``, ``level``, ``adapter_type``,
``identity`` and deflate library build (``compression.BACKEND_ID``), the bytes are the same on
every run and with any number of workers (the descriptor's CID and longContentID derive from
``identity``), which is what lets a streamed upload resume by converting again
(``CONVERTER_ID`` names what the bytes depend on).

Worst-case memory: ``window`` runs in flight, each at most ``RUN_GRAINS`` grains read (1 MiB) plus
their compressed form (< 1.01 MiB), so about ``2.1 MiB x window``; plus the grain directory
(4 bytes per 32 MiB of capacity: 512 KiB for a 4 TiB disk) and one 2 KiB grain table.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
from array import array
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from manifestkit import compression
from manifestkit.errors import ConversionError
from manifestkit.images import vmdk
from manifestkit.images.blocks.disk import SECTOR, Extent, ExtentKind, VirtualDisk
from manifestkit.progress import NoProgress, Progress

GRAIN_SECTORS = 128  # 64 KiB grains, what VMware and qemu-img write
GRAIN_BYTES = GRAIN_SECTORS * SECTOR
GTES_PER_GT = 512  # 512 entries x 4 bytes = one 2 KiB grain table
GT_SPAN = GRAIN_BYTES * GTES_PER_GT
#: GD and GT entries are u32 sector numbers: no grain may start beyond this sector
MAX_SECTOR = 0xFFFFFFFF

# Header flags (VMDK spec, hosted sparse extent header): newline-detection test valid, compressed
# grains, grains and metadata carry markers: 0x30001, VMware's value. No redundant GD in a stream.
STREAM_FLAGS = vmdk.FLAG_VALID_NEWLINE_TEST | vmdk.FLAG_COMPRESSED | vmdk.FLAG_MARKERS
VERSION = 3

#: grains per read/compress task: 1 MiB reads, few enough tasks to keep pool overhead small
RUN_GRAINS = 16

#: Deflate level of the backend in use. qemu-img deflates VMDK grains with compress(), i.e. zlib
#: level 6; ``compression.DEFAULT_LEVELS`` are the fastest levels within 2 % of its output size.
DEFAULT_LEVEL = compression.DEFAULT_LEVEL

_ZERO_GRAIN = bytes(GRAIN_BYTES)

#: what a converted image's bytes depend on besides the disk and the settings: bump the layout
#: number whenever the writer's output changes, so a resume never mixes two writers' parts
WRITER_LAYOUT = 1
CONVERTER_ID = f"streamopt-{WRITER_LAYOUT}/{compression.BACKEND_ID}"

# Incompressible grains (compressed files, encrypted data) cost deflate as much CPU as any other
# and do not shrink at any level; qemu-img's level 6 emits them as stored blocks anyway. A level-1
# probe of four 1 KiB samples spread over the grain costs ~7 % of deflating it; when the samples do
# not shrink by at least 3 %, the grain is written with zlib level 0 (stored blocks: a valid zlib
# stream, 15 bytes over the grain, about 10x cheaper than deflating it).
_PROBE_OFFSETS = (0, 21 * 1024, 42 * 1024, GRAIN_BYTES - 1024)
_PROBE_BYTES = 1024
_PROBE_STORE_RATIO = 0.97


@dataclass(frozen=True)
class StreamStats:
    capacity_sectors: int
    grains_written: int
    output_bytes: int


def pack_header(*, capacity_sectors: int, descriptor_sectors: int, gd_offset: int) -> bytes:
    """Our header (and, with the real ``gd_offset``, our footer), encoded by ``images.vmdk``."""
    return vmdk.pack_sparse_header(
        vmdk.SparseHeader(
            version=VERSION,
            flags=STREAM_FLAGS,
            capacity=capacity_sectors,
            grain_size=GRAIN_SECTORS,
            descriptor_offset=1,  # right after the header
            descriptor_size=descriptor_sectors,
            num_gtes_per_gt=GTES_PER_GT,
            rgd_offset=0,
            gd_offset=gd_offset,
            overhead=1 + descriptor_sectors,  # sectors before the first grain
            unclean_shutdown=0,
            newline_test=vmdk.NEWLINE_TEST,
            compress_algorithm=vmdk.COMPRESSION_DEFLATE,
        )
    )


def geometry(capacity_sectors: int, adapter_type: str) -> tuple[int, int, int]:
    """(cylinders, heads, sectors) as VMware and qemu-img derive them: capacity // (heads x 63),
    16 heads for IDE, 255 for SCSI; cylinders at least 1 and capped like VMware (16383 IDE, 65535
    SCSI). tests/convert/test_streamopt.py checks this against qemu-img's descriptors."""
    heads, cap = (16, 16383) if adapter_type == "ide" else (255, 65535)
    cylinders = capacity_sectors // (heads * 63)
    return max(1, min(cylinders, cap)), heads, 63


def _content_ids(identity: bytes | None) -> tuple[int, str]:
    """(CID, the 24 hex digits that lead ddb.longContentID): random, or derived from ``identity``
    so that the same source converts to the same bytes (a resumed streamed upload relies on it)."""
    if identity is None:
        seed = secrets.token_bytes(32)
    else:
        seed = hashlib.sha256(b"manifestkit streamOptimized ids\0" + identity).digest()
    cid = int.from_bytes(seed[:4], "little")
    if cid in (0xFFFFFFFF, 0xFFFFFFFE):  # these read as "no parent" / "all zeros" to some tools
        cid = 0x4D4B0001
    return cid, seed[4:16].hex()


def descriptor_text(
    *,
    name: str,
    capacity_sectors: int,
    adapter_type: str = "lsilogic",
    identity: bytes | None = None,
) -> str:
    cylinders, heads, sectors = geometry(capacity_sectors, adapter_type)
    cid, long_id = _content_ids(identity)
    safe_name = name.replace('"', "_").replace("\n", "_")
    return (
        "# Disk DescriptorFile\n"
        "version=1\n"
        'encoding="UTF-8"\n'
        f"CID={cid:08x}\n"
        "parentCID=ffffffff\n"
        'createType="streamOptimized"\n'
        "\n"
        "# Extent description\n"
        f'RW {capacity_sectors} SPARSE "{safe_name}"\n'
        "\n"
        "# The Disk Data Base\n"
        "#DDB\n"
        "\n"
        f'ddb.adapterType = "{adapter_type}"\n'
        f'ddb.geometry.cylinders = "{cylinders}"\n'
        f'ddb.geometry.heads = "{heads}"\n'
        f'ddb.geometry.sectors = "{sectors}"\n'
        f'ddb.longContentID = "{long_id}{cid:08x}"\n'
        'ddb.toolsVersion = "2147483647"\n'
        'ddb.virtualHWVersion = "4"\n'
    )


def grain_runs(extents: Iterable[Extent]) -> Iterator[tuple[int, int]]:
    """(first grain, count) for every grain touching a DATA extent, in order; a run never crosses a
    grain-table boundary and holds at most RUN_GRAINS grains."""
    start = end = -1
    for extent in extents:
        if extent.kind is not ExtentKind.DATA or extent.length <= 0:
            continue
        first = extent.offset // GRAIN_BYTES
        last = -(-extent.end // GRAIN_BYTES)
        if first <= end:
            end = max(end, last)
            continue
        if end > start:
            yield from _split(start, end)
        start, end = first, last
    if end > start:
        yield from _split(start, end)


def _split(start: int, end: int) -> Iterator[tuple[int, int]]:
    while start < end:
        count = min(RUN_GRAINS, end - start, GTES_PER_GT - start % GTES_PER_GT)
        yield start, count
        start += count


@dataclass(frozen=True)
class _Packed:
    first: int
    count: int
    grains: tuple[int, ...]
    sectors: tuple[int, ...]
    blob: bytes


def _pack_run(disk: VirtualDisk, first: int, count: int, level: int) -> _Packed:
    offset = first * GRAIN_BYTES
    length = min(count * GRAIN_BYTES, disk.capacity - offset)
    data = disk.read(offset, length)
    if length < count * GRAIN_BYTES:
        # the last grain of a disk whose size is not a grain multiple: deflate a whole grain,
        # zero-padded, so readers that expect full grains (qemu) accept it
        data += bytes(count * GRAIN_BYTES - length)
    grains: list[int] = []
    sectors: list[int] = []
    records: list[bytes] = []
    for i in range(count):
        grain = data[i * GRAIN_BYTES : (i + 1) * GRAIN_BYTES]  # bytes slice: == is one memcmp
        if grain == _ZERO_GRAIN:
            continue
        record = vmdk.pack_grain_marker((first + i) * GRAIN_SECTORS, deflate_grain(grain, level))
        records.append(record)
        grains.append(first + i)
        sectors.append(len(record) // SECTOR)
    return _Packed(first, count, tuple(grains), tuple(sectors), b"".join(records))


def deflate_grain(grain: bytes, level: int) -> bytes:
    """The zlib stream for one grain: stored when a quick probe finds it incompressible."""
    probe = b"".join(grain[at : at + _PROBE_BYTES] for at in _PROBE_OFFSETS)
    if len(compression.compress(probe, compression.FAST_LEVEL)) >= _PROBE_STORE_RATIO * len(probe):
        return compression.compress(grain, 0)
    return compression.compress(grain, level)


class _Position:
    """How many bytes the stream has yielded, in bytes and sectors."""

    def __init__(self) -> None:
        self.bytes = 0

    @property
    def sector(self) -> int:
        return self.bytes // SECTOR

    def take(self, data: bytes) -> bytes:
        self.bytes += len(data)
        return data


class StreamOptimizedStream:
    """``disk`` as a streamOptimized VMDK: iterate for its bytes, in order, each chunk once.

    ``stats`` is set once the iteration has ended. Closing the iterator early (or an error while
    reading the disk) stops the deflate pool. ``name`` is the file name the embedded descriptor's
    extent line names; ``identity`` (bytes that identify the source) makes the descriptor's ids,
    hence the whole output, reproducible; without it they are random.
    """

    def __init__(
        self,
        disk: VirtualDisk,
        *,
        name: str,
        workers: int | None = None,
        level: int = DEFAULT_LEVEL,
        adapter_type: str = "lsilogic",
        progress: Progress | None = None,
        identity: bytes | None = None,
    ) -> None:
        self.disk = disk
        self.name = name
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.level = level
        self.adapter_type = adapter_type
        self.progress = progress or NoProgress()
        self.identity = identity
        self.stats: StreamStats | None = None

    def __iter__(self) -> Iterator[bytes]:
        disk, progress = self.disk, self.progress
        window = 2 * self.workers + 2
        capacity_sectors = -(-disk.capacity // SECTOR)
        gt_count = -(-capacity_sectors // (GRAIN_SECTORS * GTES_PER_GT))
        gd = array("I", bytes(4 * gt_count))
        gt = array("I", bytes(4 * GTES_PER_GT))
        gt_index = -1
        gt_used = False
        grains_written = 0
        out = _Position()

        descriptor = descriptor_text(
            name=self.name,
            capacity_sectors=capacity_sectors,
            adapter_type=self.adapter_type,
            identity=self.identity,
        ).encode()
        descriptor += bytes(-len(descriptor) % SECTOR)
        descriptor_sectors = len(descriptor) // SECTOR

        def meta(marker_type: int, payload: bytes) -> tuple[bytes, int]:
            """A metadata marker and its payload (sector-padded), and the payload's sector."""
            padded = payload + bytes(-len(payload) % SECTOR)
            at = out.sector + 1
            return out.take(
                vmdk.pack_metadata_marker(marker_type, len(padded) // SECTOR) + padded
            ), at

        def flush_gt() -> bytes:
            nonlocal gt_used
            chunk = b""
            if gt_index >= 0 and gt_used:
                chunk, gd[gt_index] = meta(vmdk.MARKER_GT, _le_bytes(gt))
                for i in range(GTES_PER_GT):
                    gt[i] = 0
            gt_used = False
            return chunk

        yield out.take(
            pack_header(
                capacity_sectors=capacity_sectors,
                descriptor_sectors=descriptor_sectors,
                gd_offset=vmdk.GD_AT_END,
            )
            + descriptor
        )
        progress.start(disk.capacity, "converting")
        done = 0
        runs = grain_runs(disk.extents())
        pending: deque[Future[_Packed]] = deque()
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="deflate")
        try:
            for run in runs:
                pending.append(pool.submit(_pack_run, disk, run[0], run[1], self.level))
                if len(pending) >= window:
                    break
            while pending:
                packed = pending.popleft().result()
                run = next(runs, None)
                if run is not None:
                    pending.append(pool.submit(_pack_run, disk, run[0], run[1], self.level))
                table = packed.first // GTES_PER_GT
                if table != gt_index:
                    chunk = flush_gt()
                    if chunk:
                        yield chunk
                    gt_index = table
                position = out.sector
                if position + sum(packed.sectors) > MAX_SECTOR:
                    raise ConversionError(
                        f"{self.name}: the compressed image would exceed 2 TiB, the most a grain "
                        "table can address (32-bit sector numbers)",
                        fix="import the disk as RAW or VHD instead",
                    )
                for grain, sectors in zip(packed.grains, packed.sectors, strict=True):
                    gt[grain % GTES_PER_GT] = position
                    position += sectors
                reached = min(disk.capacity, (packed.first + packed.count) * GRAIN_BYTES)
                progress.advance(reached - done)
                done = reached
                if packed.grains:
                    gt_used = True
                    grains_written += len(packed.grains)
                    yield out.take(packed.blob)
            chunk = flush_gt()
            if chunk:
                yield chunk
            chunk, gd_sector = meta(vmdk.MARKER_GD, _le_bytes(gd))
            footer = pack_header(
                capacity_sectors=capacity_sectors,
                descriptor_sectors=descriptor_sectors,
                gd_offset=gd_sector,
            )
            yield chunk + out.take(
                vmdk.pack_metadata_marker(vmdk.MARKER_FOOTER, 1)
                + footer
                + vmdk.pack_metadata_marker(vmdk.MARKER_EOS, 0)
            )
            progress.advance(disk.capacity - done)
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            progress.close()
        self.stats = StreamStats(capacity_sectors, grains_written, out.bytes)


def write_stream_optimized(
    disk: VirtualDisk,
    fd: int,
    *,
    name: str,
    workers: int | None = None,
    level: int = DEFAULT_LEVEL,
    adapter_type: str = "lsilogic",
    progress: Progress | None = None,
    identity: bytes | None = None,
) -> StreamStats:
    """Write ``disk`` as a streamOptimized VMDK to ``fd`` (positioned at 0), in one pass.

    ``name`` is the file name the embedded descriptor's extent line names. The caller owns ``fd``
    (fsync, close, rename).
    """
    stream = StreamOptimizedStream(
        disk,
        name=name,
        workers=workers,
        level=level,
        adapter_type=adapter_type,
        progress=progress,
        identity=identity,
    )
    for chunk in stream:
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
    assert stream.stats is not None  # set when the iteration ends
    return stream.stats


def _le_bytes(table: array) -> bytes:
    if table.itemsize != 4:  # pragma: no cover - "I" is 4 bytes on every supported platform
        raise RuntimeError("array('I') is not 32-bit here")
    if struct.pack("=I", 1) != struct.pack("<I", 1):  # pragma: no cover - big-endian hosts
        table = array("I", table)
        table.byteswap()
    return table.tobytes()
