"""Pure VHD parsers: footer, checksum, dynamic header, against qemu-img's own images."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from manifestkit.errors import ImageError
from manifestkit.images.vhd import (
    DISK_DYNAMIC,
    DISK_FIXED,
    check_footer,
    parse_dynamic_header,
    parse_footer,
)

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "tiny-dynamic.vhd"


def test_dynamic_sample_matches_qemu_img(qemu_img) -> None:
    data = SAMPLE.read_bytes()
    footer = parse_footer(data[-512:])
    check_footer(footer)
    assert footer.disk_type == DISK_DYNAMIC and footer.subformat == "dynamic"
    assert footer.current_size == qemu_img.info(SAMPLE)["virtual-size"]
    assert data[:512] == data[-512:]
    dyn = parse_dynamic_header(data[footer.data_offset : footer.data_offset + 1024])
    assert dyn.checksum_ok
    assert dyn.block_size == qemu_img.info(SAMPLE)["cluster-size"]
    assert dyn.max_table_entries * dyn.block_size >= footer.current_size


def test_fixed_footer(qemu_img, tmp_path: Path) -> None:
    path = tmp_path / "f.vhd"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", str(path), "3M")
    footer = parse_footer(path.read_bytes()[-512:])
    check_footer(footer)
    assert footer.disk_type == DISK_FIXED
    assert footer.data_offset == 0xFFFFFFFFFFFFFFFF
    assert footer.current_size == 3 * 1024 * 1024


def test_every_byte_is_covered_by_the_checksum() -> None:
    footer = bytearray(SAMPLE.read_bytes()[-512:])
    for at in (8, 20, 40, 55, 60, 70, 84, 300, 511):
        damaged = bytearray(footer)
        damaged[at] ^= 0x01
        with pytest.raises(ImageError, match="checksum"):
            check_footer(parse_footer(bytes(damaged)))


def test_checksum_field_itself() -> None:
    footer = bytearray(SAMPLE.read_bytes()[-512:])
    (value,) = struct.unpack_from(">I", footer, 64)
    struct.pack_into(">I", footer, 64, value ^ 0x10)
    with pytest.raises(ImageError, match="checksum"):
        check_footer(parse_footer(bytes(footer)))


def test_bad_cookie_and_short_footer() -> None:
    with pytest.raises(ImageError, match="cookie"):
        parse_footer(b"notavhd!" + bytes(504))
    with pytest.raises(ImageError, match="truncated"):
        parse_footer(SAMPLE.read_bytes()[-100:])
