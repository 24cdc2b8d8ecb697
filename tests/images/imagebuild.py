"""Build streamOptimized VMDKs in the two layouts qemu-img does not write (design.md §3).

(a) VMware: header gdOffset = GD_AT_END; grains; grain-table and grain-directory markers; footer
    marker + footer header with the real gdOffset; end-of-stream marker.
(b) open-vmdk style: header with the real gdOffset, grain directory and tables first (no markers),
    grains, then an end-of-stream marker, no footer.
Structs come from the spec (VMware "Virtual Disk Format 1.1"); only the packers are shared with the
code under test, and qemu-img is the oracle that reads the result back.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import replace

from manifestkit.images.vmdk import (
    FLAG_COMPRESSED,
    FLAG_MARKERS,
    FLAG_VALID_NEWLINE_TEST,
    GD_AT_END,
    MARKER_EOS,
    MARKER_FOOTER,
    MARKER_GD,
    MARKER_GT,
    NEWLINE_TEST,
    SECTOR,
    SparseHeader,
    pack_grain_marker,
    pack_metadata_marker,
    pack_sparse_header,
)

GRAIN_SECTORS = 128
GTES = 512


def descriptor_text(capacity_sectors: int, name: str = "disk.vmdk") -> bytes:
    return (
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        'createType="streamOptimized"\n\n# Extent description\n'
        f'RW {capacity_sectors} SPARSE "{name}"\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.adapterType = "lsilogic"\nddb.virtualHWVersion = "4"\n'
    ).encode()


def _sectors(n_bytes: int) -> int:
    return -(-n_bytes // SECTOR)


def build_stream(raw: bytes, layout: str, *, eos: bool = True) -> bytes:
    """A streamOptimized VMDK of ``raw`` (a whole number of sectors) in ``layout`` a or b."""
    assert len(raw) % SECTOR == 0
    capacity = len(raw) // SECTOR
    grain_bytes = GRAIN_SECTORS * SECTOR
    n_grains = -(-capacity // GRAIN_SECTORS)
    n_gts = -(-n_grains // GTES)
    gt_sectors = _sectors(GTES * 4)
    gd_sectors = _sectors(n_gts * 4)
    desc = descriptor_text(capacity)
    desc_sectors = _sectors(len(desc)) + 1
    base = SparseHeader(
        version=3,
        flags=FLAG_VALID_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity=capacity,
        grain_size=GRAIN_SECTORS,
        descriptor_offset=1,
        descriptor_size=desc_sectors,
        num_gtes_per_gt=GTES,
        rgd_offset=0,
        gd_offset=GD_AT_END,
        overhead=0,
        unclean_shutdown=0,
        newline_test=NEWLINE_TEST,
        compress_algorithm=1,
    )
    desc_area = desc.ljust(desc_sectors * SECTOR, b"\0")
    if layout == "a":
        overhead = 1 + desc_sectors
        out = bytearray(pack_sparse_header(replace(base, overhead=overhead)) + desc_area)
        gts = [[0] * GTES for _ in range(n_gts)]
        for g in range(n_grains):
            data = raw[g * grain_bytes : (g + 1) * grain_bytes]
            if data.count(0) == len(data):
                continue
            gts[g // GTES][g % GTES] = len(out) // SECTOR
            out += pack_grain_marker(g * GRAIN_SECTORS, zlib.compress(data))
        gd = []
        for gt in gts:
            out += pack_metadata_marker(MARKER_GT, gt_sectors)
            gd.append(len(out) // SECTOR)
            out += struct.pack(f"<{GTES}I", *gt).ljust(gt_sectors * SECTOR, b"\0")
        out += pack_metadata_marker(MARKER_GD, gd_sectors)
        gd_offset = len(out) // SECTOR
        out += struct.pack(f"<{len(gd)}I", *gd).ljust(gd_sectors * SECTOR, b"\0")
        out += pack_metadata_marker(MARKER_FOOTER, 1)
        out += pack_sparse_header(replace(base, overhead=overhead, gd_offset=gd_offset))
        out += pack_metadata_marker(MARKER_EOS)
        return bytes(out)
    if layout == "b":
        gd_offset = 1 + desc_sectors
        first_gt = gd_offset + gd_sectors
        overhead = first_gt + n_gts * gt_sectors
        header = replace(base, gd_offset=gd_offset, overhead=overhead)
        out = bytearray(b"\0" * (overhead * SECTOR))
        out[:SECTOR] = pack_sparse_header(header)
        out[SECTOR : SECTOR + len(desc_area)] = desc_area
        gd = [first_gt + i * gt_sectors for i in range(n_gts)]
        out[gd_offset * SECTOR : gd_offset * SECTOR + 4 * n_gts] = struct.pack(f"<{n_gts}I", *gd)
        for g in range(n_grains):
            data = raw[g * grain_bytes : (g + 1) * grain_bytes]
            if data.count(0) == len(data):
                continue
            entry = (gd[g // GTES]) * SECTOR + 4 * (g % GTES)
            out[entry : entry + 4] = struct.pack("<I", len(out) // SECTOR)
            out += pack_grain_marker(g * GRAIN_SECTORS, zlib.compress(data))
        if eos:
            out += pack_metadata_marker(MARKER_EOS)
        return bytes(out)
    raise ValueError(layout)


def sample_disk(size: int) -> bytes:
    """Recognisable, partly compressible content with zero grains in between."""
    raw = bytearray(size)
    text = b"manifestkit layout test " * 100
    for offset in range(0, size, 3 * GRAIN_SECTORS * SECTOR):
        chunk = text + struct.pack("<Q", offset) + bytes(range(256)) * 8
        raw[offset : offset + len(chunk)] = chunk[: size - offset]
    return bytes(raw)


# -- dynamic VHD with any block size (qemu-img only makes 2 MiB blocks) ------------------------
# Microsoft "Virtual Hard Disk Image Format Specification" v1.0, written here from the spec's
# tables (big-endian), not from manifestkit's parser.


def _vhd_checksum(buf: bytes) -> int:
    """One's complement of the byte sum (the checksum field zeroed by the caller)."""
    return ~sum(buf) & 0xFFFFFFFF


def vhd_footer(capacity: int, *, data_offset: int = 512, disk_type: int = 3) -> bytes:
    #   0 cookie 8s | 8 features u32 | 12 version u32 | 16 data offset u64 | 24 timestamp u32
    #  28 creator app 4s | 32 creator version u32 | 36 creator host OS 4s | 40 original size u64
    #  48 current size u64 | 56 geometry u16 u8 u8 | 60 disk type u32 | 64 checksum u32
    #  68 unique id 16s | 84 saved state u8 | 85 reserved
    cylinders, heads, spt = min(65535, capacity // (16 * 63 * 512)), 16, 63
    fields = struct.pack(
        ">8sIIQI4sI4sQQHBBII16sB",
        b"conectix",
        2,
        0x00010000,
        data_offset,
        0,
        b"win ",  # Hyper-V: readers take the size from the footer, not from the geometry
        0x000A0000,
        b"Wi2k",
        capacity,
        capacity,
        cylinders,
        heads,
        spt,
        disk_type,
        0,
        bytes(range(16)),
        0,
    ).ljust(512, b"\0")
    return fields[:64] + struct.pack(">I", _vhd_checksum(fields)) + fields[68:]


def vhd_dynamic_header(table_offset: int, entries: int, block_size: int) -> bytes:
    #   0 cookie 8s | 8 data offset u64 (unused: all ones) | 16 table offset u64
    #  24 header version u32 | 28 max table entries u32 | 32 block size u32 | 36 checksum u32
    #  40 parent unique id 16s | 56 parent timestamp u32 | 60 reserved | 64.. parent name/locators
    fields = struct.pack(
        ">8sQQIIII",
        b"cxsparse",
        0xFFFFFFFFFFFFFFFF,
        table_offset,
        0x00010000,
        entries,
        block_size,
        0,
    ).ljust(1024, b"\0")
    return fields[:36] + struct.pack(">I", _vhd_checksum(fields)) + fields[40:]


def write_dynamic_vhd(
    path, capacity: int, block_size: int, blocks: dict[int, tuple[bytes, bytes]]
) -> None:
    """A dynamic VHD at ``path``: ``blocks`` maps a block index to (sector bitmap, data); every
    other block is unallocated. Sectors whose bitmap bit is clear must hold zeros in ``data``
    (qemu-img ignores the bitmap when it reads). The BAT is written in chunks (it can be large)."""
    entries = -(-capacity // block_size)
    bitmap_bytes = -(-(block_size // 512) // (8 * 512)) * 512
    table_offset = 512 + 1024
    table_bytes = -(-entries * 4 // 512) * 512
    data_at = table_offset + table_bytes
    footer = vhd_footer(capacity)
    with open(path, "wb") as f:
        f.write(footer)
        f.write(vhd_dynamic_header(table_offset, entries, block_size))
        placed: dict[int, int] = {}
        for n, index in enumerate(sorted(blocks)):
            placed[index] = (data_at + n * (bitmap_bytes + block_size)) // 512
        chunk = 1 << 16
        for first in range(0, entries, chunk):
            row = [placed.get(i, 0xFFFFFFFF) for i in range(first, min(first + chunk, entries))]
            f.write(struct.pack(f">{len(row)}I", *row))
        f.write(b"\xff" * (table_bytes - entries * 4))
        for index in sorted(blocks):
            bitmap, data = blocks[index]
            f.write(bitmap.ljust(bitmap_bytes, b"\0"))
            f.write(data.ljust(block_size, b"\0"))
        f.write(footer)
