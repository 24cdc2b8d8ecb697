"""The writer's layout (VMware's: GTs after their grains, GD + footer + EOS at the end), its
descriptor geometry (against qemu-img's), and that it never reads holes."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from manifestkit.convert import convert_image, open_disk
from manifestkit.convert.streamopt import GRAIN_BYTES, GT_SPAN, geometry, write_stream_optimized
from manifestkit.images import vmdk
from manifestkit.images.blocks.disk import Extent, ExtentKind

from .helpers import assert_same_disk, needs_qemu, qemu

MiB = 1024 * 1024


def _sparse_raw(path: Path, size: int, spots: list[int]) -> None:
    with open(path, "wb") as f:
        f.truncate(size)
        for spot in spots:
            f.seek(spot)
            f.write(os.urandom(100_000))


def _markers(path: Path, start: int) -> Iterator[tuple[int, vmdk.Marker]]:
    """Every marker from ``start`` to the end, with its byte offset."""
    with open(path, "rb") as f:
        pos = start
        size = path.stat().st_size
        while pos < size:
            f.seek(pos)
            marker = vmdk.parse_marker(f.read(512))
            yield pos, marker
            if marker.is_grain:
                pos += -(-(12 + marker.size) // 512) * 512
            else:
                pos += 512 + marker.value * 512


@needs_qemu
def test_vmware_layout(tmp_path: Path) -> None:
    raw = tmp_path / "gaps.raw"
    # data in grain tables 0 and 2 (table 1 stays empty), and in the last, partial table
    size = 3 * GT_SPAN + 5 * GRAIN_BYTES + 4096
    _sparse_raw(raw, size, [0, 2 * GT_SPAN + 7 * GRAIN_BYTES, size - 100_000])
    out = tmp_path / "out.vmdk"
    convert_image(raw, out)
    assert_same_disk(raw, out, "raw")
    data = out.read_bytes()
    assert len(data) % 512 == 0
    header = vmdk.parse_sparse_header(data[:512])
    assert header.gd_offset == vmdk.GD_AT_END
    assert (header.version, header.flags, header.compress_algorithm) == (3, 0x30001, 1)
    assert (header.grain_size, header.num_gtes_per_gt) == (128, 512)
    descriptor = vmdk.parse_descriptor(
        vmdk.decode_descriptor(data[512 : 512 * (1 + header.descriptor_size)])
    )
    assert descriptor.create_type == "streamOptimized"
    assert descriptor.extents[0].filename == "out.vmdk"
    assert descriptor.capacity_sectors == -(-size // 512)

    kinds: list[str] = []
    grains_seen: list[int] = []  # grain numbers since the last GT marker
    tables: dict[int, int] = {}  # GT payload sector -> table number
    for pos, marker in _markers(out, header.overhead * 512):
        if marker.is_grain:
            kinds.append("grain")
            grains_seen.append(marker.value // 128)
            continue
        kinds.append({0: "eos", 1: "gt", 2: "gd", 3: "footer"}[marker.type])
        if marker.type == vmdk.MARKER_GT:
            numbers = {g // 512 for g in grains_seen}
            assert len(numbers) == 1, "a GT follows exactly the grains it indexes"
            tables[pos // 512 + 1] = numbers.pop()
            grains_seen = []
            assert marker.value == 4
        elif marker.type == vmdk.MARKER_GD:
            gd = struct.unpack_from(f"<{header.num_gd_entries}I", data, pos + 512)
            expected = [0] * header.num_gd_entries
            for sector, number in tables.items():
                expected[number] = sector
            assert list(gd) == expected
            gd_sector = pos // 512 + 1
        elif marker.type == vmdk.MARKER_FOOTER:
            footer = vmdk.parse_sparse_header(data[pos + 512 : pos + 1024])
            assert footer == vmdk.SparseHeader(**{**header.__dict__, "gd_offset": gd_sector})
            break
    assert sorted(tables.values()) == [0, 2, 3]  # the empty table 1 is not written
    assert kinds[-2:] == ["gd", "footer"]
    assert data[-1536:-1024] == vmdk.pack_metadata_marker(vmdk.MARKER_FOOTER, 1)
    assert data[-512:] == bytes(512)  # end-of-stream marker


@needs_qemu
@pytest.mark.parametrize("adapter", ["lsilogic", "ide"])
@pytest.mark.parametrize("capacity", [64 * MiB + 512, 1024 * MiB, 20 * 1024 * MiB])
def test_geometry_matches_qemu(tmp_path: Path, adapter: str, capacity: int) -> None:
    made = tmp_path / "q.vmdk"
    result = qemu(
        "create",
        "-f",
        "vmdk",
        "-o",
        f"subformat=streamOptimized,adapter_type={adapter}",
        str(made),
        str(capacity),
    )
    assert result.returncode == 0, result.stderr
    raw = made.read_bytes()
    header = vmdk.parse_sparse_header(raw[:512])
    start = header.descriptor_offset * 512
    text = vmdk.decode_descriptor(raw[start : start + header.descriptor_size * 512])
    ddb = vmdk.parse_descriptor(text).ddb
    theirs = tuple(int(ddb[f"ddb.geometry.{k}"]) for k in ("cylinders", "heads", "sectors"))
    ours = geometry(capacity // 512, adapter)
    if adapter == "ide" and theirs[0] > 16383:
        # qemu-img does not cap IDE cylinders at 16383 as VMware does: heads and sectors agree
        assert ours == (16383, *theirs[1:])
    else:
        assert ours == theirs


class _Recording:
    """A disk with data at a few places whose ``read`` refuses to touch anything else."""

    def __init__(self, capacity: int, data: list[tuple[int, int]]) -> None:
        self.capacity = capacity
        self.files: tuple[str, ...] = ()
        self._data = data
        self.reads: list[tuple[int, int]] = []

    def extents(self) -> Iterator[Extent]:
        pos = 0
        for offset, length in self._data:
            if offset > pos:
                yield Extent(pos, offset - pos, ExtentKind.UNALLOCATED)
            yield Extent(offset, length, ExtentKind.DATA)
            pos = offset + length
        if pos < self.capacity:
            yield Extent(pos, self.capacity - pos, ExtentKind.ZERO)

    def read(self, offset: int, length: int) -> bytes:
        self.reads.append((offset, length))
        touched = any(
            offset < o + n + GRAIN_BYTES and o - GRAIN_BYTES < offset + length
            for o, n in self._data
        )
        assert touched, f"read of a hole at {offset}"
        return b"\x42" * length

    def close(self) -> None:
        pass


def test_writer_reads_only_grains_with_data(tmp_path: Path) -> None:
    tib = 1024**4
    disk = _Recording(
        tib, [(5 * GRAIN_BYTES + 7, 10), (tib // 2, 3 * GRAIN_BYTES), (tib - 512, 512)]
    )
    with open(tmp_path / "out.vmdk", "wb") as f:
        stats = write_stream_optimized(disk, f.fileno(), name="out.vmdk", workers=2)
    assert stats.grains_written == 1 + 3 + 1
    assert sum(n for _, n in disk.reads) == 5 * GRAIN_BYTES
    assert stats.output_bytes < 1 * MiB  # a 1 TiB disk: only metadata and five grains


@needs_qemu
def test_large_sparse_raw(tmp_path: Path) -> None:
    raw = tmp_path / "big.raw"
    size = 16 * 1024**3 + 3 * 512
    _sparse_raw(raw, size, [0, 4 * 1024**3 - 50_000, 9 * 1024**3, size - 100_000])
    disk = open_disk(raw)
    try:
        data = sum(e.length for e in disk.extents() if e.kind is ExtentKind.DATA)
    finally:
        disk.close()
    assert data < 16 * MiB  # SEEK_DATA/SEEK_HOLE found the holes
    out = tmp_path / "big.vmdk"
    info = convert_image(raw, out)
    assert info.capacity_bytes == size
    assert out.stat().st_size < 2 * MiB
    assert_same_disk(raw, out, "raw")


def test_incompressible_grains_are_stored_and_others_deflated() -> None:
    import zlib

    from manifestkit import compression
    from manifestkit.convert.streamopt import deflate_grain

    random_grain = os.urandom(GRAIN_BYTES)
    text = b"".join(b"line %d of a log file: kernel usr lib\n" % i for i in range(2000))
    text_grain = text[:GRAIN_BYTES]
    half = random_grain[: GRAIN_BYTES // 2] + text_grain[: GRAIN_BYTES // 2]
    for grain in (random_grain, text_grain, half):
        assert zlib.decompress(deflate_grain(grain, 5)) == grain
    assert len(deflate_grain(random_grain, 5)) == len(zlib.compress(random_grain, 0))
    assert len(deflate_grain(text_grain, 5)) == len(compression.compress(text_grain, 5))
    assert len(deflate_grain(half, 5)) == len(compression.compress(half, 5))
    assert len(deflate_grain(text_grain, 5)) < len(text_grain) // 4
