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
