"""Pure VMDK parsers: header fields, validation of each field, descriptor, markers."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from manifestkit.errors import ImageError
from manifestkit.images.vmdk import (
    FLAG_COMPRESSED,
    FLAG_MARKERS,
    FLAG_VALID_NEWLINE_TEST,
    MARKER_EOS,
    MARKER_GD,
    SparseHeader,
    check_sparse_header,
    decode_descriptor,
    pack_grain_marker,
    pack_metadata_marker,
    pack_sparse_header,
    parse_descriptor,
    parse_marker,
    parse_sparse_header,
)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tiny-stream.vmdk"


def sample_header() -> SparseHeader:
    return parse_sparse_header(SAMPLE.read_bytes()[:512])


def test_sample_header_matches_qemu_img(qemu_img) -> None:
    info = qemu_img.info(SAMPLE)
    h = sample_header()
    assert h.capacity_bytes == info["virtual-size"]
    assert h.grain_bytes == info["cluster-size"]
    assert h.compressed and h.has_markers and h.compress_algorithm == 1
    assert info["format-specific"]["data"]["extents"][0]["compressed"] is True


def test_pack_parse_round_trip() -> None:
    h = sample_header()
    assert parse_sparse_header(pack_sparse_header(h)) == h


def test_truncated_header() -> None:
    with pytest.raises(ImageError, match="truncated"):
        parse_sparse_header(SAMPLE.read_bytes()[:60])


def test_bad_magic() -> None:
    with pytest.raises(ImageError, match="magic"):
        parse_sparse_header(b"XXXX" + SAMPLE.read_bytes()[4:512])


FILE_BYTES = SAMPLE.stat().st_size


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 0}, "version 0"),
        ({"version": 4}, "version 4"),
        ({"grain_size": 0}, "not a power of two"),
        ({"grain_size": 96}, "not a power of two"),
        ({"grain_size": 1 << 30}, "absurd"),
        ({"capacity": 0}, "capacity is 0"),
        ({"capacity": 1 << 50}, "absurd"),
        ({"num_gtes_per_gt": 0}, "numGTEsPerGT"),
        ({"capacity": 1 << 36, "grain_size": 1, "num_gtes_per_gt": 1}, "grain directory of"),
        ({"compress_algorithm": 7}, "compressAlgorithm 7"),
        ({"flags": FLAG_COMPRESSED | FLAG_MARKERS | 0x40000}, "incompatible flags"),
        ({"newline_test": b"\n \n\n"}, "newline"),
        ({"gd_offset": 10**6}, "gdOffset"),
        ({"gd_offset": 0}, "gdOffset"),
        ({"descriptor_offset": 10**6}, "descriptor"),
        ({"descriptor_size": 10**6}, "descriptorSize"),
        ({"overhead": 10**6}, "overHead"),
        ({"flags": FLAG_VALID_NEWLINE_TEST | 0x2, "rgd_offset": 10**6}, "rgdOffset"),
    ],
)
def test_each_nonsense_field_is_refused(change: dict, message: str) -> None:
    h = replace(sample_header(), **change)
    # through bytes, as a file would carry it
    h = parse_sparse_header(pack_sparse_header(h))
    with pytest.raises(ImageError, match=message):
        check_sparse_header(h, FILE_BYTES)


def test_sample_header_passes_checks() -> None:
    check_sparse_header(sample_header(), FILE_BYTES)


QEMU_DESCRIPTOR = """# Disk DescriptorFile
version=1
CID=96c8be40
parentCID=ffffffff
createType="twoGbMaxExtentFlat"

# Extent description
RW 4194240 FLAT "d-f001.vmdk" 0
RW 806 FLAT "d-f002.vmdk" 0
RDONLY 100 ZERO
NOACCESS 28 SPARSE "d-s003.vmdk"

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.geometry.cylinders = "9"
ddb.adapterType = "ide"
"""


def test_parse_descriptor() -> None:
    d = parse_descriptor(QEMU_DESCRIPTOR)
    assert d.create_type == "twoGbMaxExtentFlat"
    assert [(e.access, e.sectors, e.type, e.filename, e.offset) for e in d.extents] == [
        ("RW", 4194240, "FLAT", "d-f001.vmdk", 0),
        ("RW", 806, "FLAT", "d-f002.vmdk", 0),
        ("RDONLY", 100, "ZERO", None, None),
        ("NOACCESS", 28, "SPARSE", "d-s003.vmdk", None),
    ]
    assert d.capacity_sectors == 4194240 + 806 + 100 + 28
    assert d.ddb["ddb.adapterType"] == "ide"
    assert d.parent_cid == "ffffffff"


def test_descriptor_first_line_spellings() -> None:
    from manifestkit.images.detect import looks_like_descriptor

    assert looks_like_descriptor(b"# Disk DescriptorFile\nversion=1\n")
    assert looks_like_descriptor(b"\n# Disk Descriptor File\r\nversion=1\n")
    assert looks_like_descriptor(b"#disk descriptorfile\n")
    assert not looks_like_descriptor(b"# Disk Descriptor\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# Disk DescriptorFile\nhello world\n", "line 2"),
        ('# Disk DescriptorFile\ncreateType="monolithicFlat"\n', "no extents"),
        ('# Disk DescriptorFile\nRW 10 FLAT "x" 0\n', "no createType"),
        ('# Disk DescriptorFile\ncreateType="x"\nRW ten FLAT "x" 0\n', "line 3"),
    ],
)
def test_garbage_descriptor(text: str, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        parse_descriptor(text)


def test_binary_descriptor_and_huge_descriptor() -> None:
    with pytest.raises(ImageError, match="binary"):
        decode_descriptor(b"# Disk DescriptorFile\n\x01\x02\x03\xff")
    with pytest.raises(ImageError, match="larger"):
        decode_descriptor(b"ddb.x = 1\n" * 100_000)
    # embedded descriptors are NUL padded: the padding is not garbage
    assert decode_descriptor(b"a=1\n\0\0\0\x01") == "a=1\n"


def test_markers_round_trip() -> None:
    grain = parse_marker(pack_grain_marker(256, b"xyz"))
    assert grain.is_grain and grain.value == 256 and grain.size == 3 and grain.type is None
    assert len(pack_grain_marker(256, b"x" * 500)) == 512  # 12 + 500 fills one sector
    assert len(pack_grain_marker(256, b"x" * 501)) == 1024  # one byte more spills into a second
    gd = parse_marker(pack_metadata_marker(MARKER_GD, 4))
    assert not gd.is_grain and gd.type == MARKER_GD and gd.value == 4
    assert parse_marker(bytes(512)).type == MARKER_EOS
