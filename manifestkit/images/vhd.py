"""VHD: the hard disk footer and the dynamic disk header (design.md §3).

Layouts from Microsoft's "Virtual Hard Disk Image Format Specification" (v1.0), sections
"Hard Disk Footer Format" and "Dynamic Disk Header Format". Big-endian. The parse functions are
pure (bytes in, frozen dataclass out) and do not raise on a bad checksum: they record it, and
``check_footer`` / ``check_dynamic_header`` refuse it, so a converter can choose to be lenient.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from manifestkit.errors import ImageError
from manifestkit.images.info import ImageInfo
from manifestkit.images.reader import FIX_TRUNCATED, ImageReader
from manifestkit.images.rules import convert_fix

SECTOR = 512
FOOTER_BYTES = 512
DYNAMIC_HEADER_BYTES = 1024
FOOTER_COOKIE = b"conectix"
DYNAMIC_COOKIE = b"cxsparse"
FOOTER_VERSION = 0x00010000
DYNAMIC_HEADER_VERSION = 0x00010000
#: data offset of a fixed disk, and the dynamic header's own (unused) data offset
NO_OFFSET = 0xFFFFFFFFFFFFFFFF
#: a BAT entry for a block that is not allocated
BAT_UNUSED = 0xFFFFFFFF
_FIX_DAMAGED = "the file is damaged; copy it again or re-export it"

DISK_FIXED = 2
DISK_DYNAMIC = 3
DISK_DIFFERENCING = 4
DISK_TYPES = {DISK_FIXED: "fixed", DISK_DYNAMIC: "dynamic", DISK_DIFFERENCING: "differencing"}

# Hard Disk Footer: 0 cookie 8s | 8 features u32 | 12 file format version u32 | 16 data offset u64
# 24 timestamp u32 | 28 creator application 4s | 32 creator version u32 | 36 creator host OS 4s
# 40 original size u64 | 48 current size u64 | 56 geometry: cylinders u16, heads u8, sectors u8
# 60 disk type u32 | 64 checksum u32 | 68 unique id 16s | 84 saved state u8 | 85 reserved[427]
_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB")
_FOOTER_CHECKSUM_AT = 64

# Dynamic Disk Header: 0 cookie 8s | 8 data offset u64 | 16 table offset u64 | 24 header version u32
# 28 max table entries u32 | 32 block size u32 | 36 checksum u32 | 40 parent unique id 16s
# 56 parent timestamp u32 | 60 reserved u32 | 64 parent unicode name 512 bytes (UTF-16BE)
# 576 parent locator entries 8 x 24 bytes | 768 reserved[256]
_DYNAMIC = struct.Struct(">8sQQIIII16sII512s")
_DYNAMIC_CHECKSUM_AT = 36


def vhd_checksum(buf: bytes, checksum_at: int) -> int:
    """One's complement of the byte sum with the 4-byte checksum field taken as zero (spec)."""
    total = sum(buf) - sum(buf[checksum_at : checksum_at + 4])
    return ~total & 0xFFFFFFFF


class _Checksummed:
    """The footer and the dynamic header both carry a checksum (spec: one's complement of the
    byte sum); parsing keeps the stored one and the computed one, checking compares them."""

    checksum: int
    computed_checksum: int

    @property
    def checksum_ok(self) -> bool:
        return self.checksum == self.computed_checksum

    def check_checksum(self, what: str) -> None:
        if not self.checksum_ok:
            raise ImageError(
                f"VHD {what} checksum 0x{self.checksum:08x} does not match its contents "
                f"(0x{self.computed_checksum:08x})",
                fix=_FIX_DAMAGED,
            )


@dataclass(frozen=True)
class VhdFooter(_Checksummed):
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_version: int
    creator_os: bytes
    original_size: int
    #: bytes: the virtual disk size (capacity)
    current_size: int
    cylinders: int
    heads: int
    sectors_per_track: int
    disk_type: int
    checksum: int
    computed_checksum: int
    unique_id: uuid.UUID
    saved_state: int

    @property
    def subformat(self) -> str:
        return DISK_TYPES.get(self.disk_type, f"type-{self.disk_type}")


def parse_footer(buf: bytes) -> VhdFooter:
    """Decode a 512-byte VHD footer (or its copy at offset 0); checks the cookie only."""
    if len(buf) < FOOTER_BYTES:
        raise ImageError(
            f"truncated VHD footer ({len(buf)} of 512 bytes)", fix="copy the file again"
        )
    (
        cookie,
        features,
        version,
        data_offset,
        timestamp,
        app,
        app_version,
        host_os,
        original,
        current,
        cylinders,
        heads,
        spt,
        disk_type,
        checksum,
        unique,
        saved,
    ) = _FOOTER.unpack_from(buf)
    if cookie != FOOTER_COOKIE:
        raise ImageError(
            f"bad VHD footer cookie {cookie!r} (expected b'conectix')", fix=_FIX_DAMAGED
        )
    return VhdFooter(
        features=features,
        version=version,
        data_offset=data_offset,
        timestamp=timestamp,
        creator_app=app,
        creator_version=app_version,
        creator_os=host_os,
        original_size=original,
        current_size=current,
        cylinders=cylinders,
        heads=heads,
        sectors_per_track=spt,
        disk_type=disk_type,
        checksum=checksum,
        computed_checksum=vhd_checksum(buf[:FOOTER_BYTES], _FOOTER_CHECKSUM_AT),
        unique_id=uuid.UUID(bytes=unique),
        saved_state=saved,
    )


def check_footer(f: VhdFooter) -> None:
    """Refuse a footer with a bad checksum, an unknown version or disk type, or a zero size."""
    f.check_checksum("footer")
    if f.version != FOOTER_VERSION:
        raise ImageError(
            f"VHD footer version 0x{f.version:08x} is not 0x00010000", fix=_FIX_DAMAGED
        )
    if f.disk_type not in DISK_TYPES:
        raise ImageError(f"VHD disk type {f.disk_type} is unknown (2, 3 or 4)", fix=_FIX_DAMAGED)
    if f.current_size == 0:
        raise ImageError("VHD current size is 0", fix=_FIX_DAMAGED)


@dataclass(frozen=True)
class DynamicHeader(_Checksummed):
    data_offset: int
    #: byte offset of the block allocation table (BAT)
    table_offset: int
    version: int
    max_table_entries: int
    #: bytes per block (2 MiB by default)
    block_size: int
    checksum: int
    computed_checksum: int
    parent_unique_id: uuid.UUID
    parent_timestamp: int
    #: differencing disks: the parent's file name (UTF-16BE in the file)
    parent_name: str

    @property
    def bitmap_bytes(self) -> int:
        """Each block starts with a sector bitmap padded to whole sectors (spec "Block Format")."""
        bits = self.block_size // SECTOR
        return -(-bits // (8 * SECTOR)) * SECTOR


def parse_dynamic_header(buf: bytes) -> DynamicHeader:
    """Decode a 1024-byte ``cxsparse`` header; checks the cookie only."""
    if len(buf) < DYNAMIC_HEADER_BYTES:
        raise ImageError(
            f"truncated VHD dynamic header ({len(buf)} of 1024 bytes)",
            fix=FIX_TRUNCATED,
        )
    (
        cookie,
        data_offset,
        table_offset,
        version,
        entries,
        block_size,
        checksum,
        parent_id,
        parent_ts,
        _reserved,
        parent_name,
    ) = _DYNAMIC.unpack_from(buf)
    if cookie != DYNAMIC_COOKIE:
        raise ImageError(
            f"bad VHD dynamic header cookie {cookie!r} (expected b'cxsparse')", fix=_FIX_DAMAGED
        )
    name = parent_name.decode("utf-16-be", errors="replace").split("\0", 1)[0]
    return DynamicHeader(
        data_offset=data_offset,
        table_offset=table_offset,
        version=version,
        max_table_entries=entries,
        block_size=block_size,
        checksum=checksum,
        computed_checksum=vhd_checksum(buf[:DYNAMIC_HEADER_BYTES], _DYNAMIC_CHECKSUM_AT),
        parent_unique_id=uuid.UUID(bytes=parent_id),
        parent_timestamp=parent_ts,
        parent_name=name,
    )


def dynamic_header_offset(footer: VhdFooter, file_bytes: int) -> int:
    """The footer's data offset, checked to hold a whole dynamic header inside the file."""
    if footer.data_offset == NO_OFFSET or footer.data_offset + DYNAMIC_HEADER_BYTES > file_bytes:
        raise ImageError(
            f"VHD dynamic header offset {footer.data_offset} is outside the file",
            fix=_FIX_DAMAGED,
        )
    return footer.data_offset


def check_dynamic_header(h: DynamicHeader, footer: VhdFooter, file_bytes: int) -> None:
    """Refuse a dynamic header with a bad checksum, a silly block size or a BAT outside the file."""
    h.check_checksum("dynamic header")
    if h.version != DYNAMIC_HEADER_VERSION:
        raise ImageError(
            f"VHD dynamic header version 0x{h.version:08x} is not 0x00010000", fix=_FIX_DAMAGED
        )
    if h.block_size < SECTOR or h.block_size & (h.block_size - 1):
        raise ImageError(f"VHD block size {h.block_size} is not a power of two", fix=_FIX_DAMAGED)
    if h.max_table_entries * h.block_size < footer.current_size:
        raise ImageError(
            f"VHD block table ({h.max_table_entries} blocks of {h.block_size}) is smaller than the "
            f"disk ({footer.current_size} bytes)",
            fix=_FIX_DAMAGED,
        )
    bat_end = h.table_offset + 4 * h.max_table_entries
    if h.table_offset < SECTOR or bat_end > file_bytes - FOOTER_BYTES:
        raise ImageError(
            f"VHD block table at byte {h.table_offset} ({h.max_table_entries} entries) is outside "
            f"the file ({file_bytes} bytes): truncated",
            fix=FIX_TRUNCATED,
        )


def parse_bat(buf: bytes) -> tuple[int, ...]:
    """Block allocation table entries (sector offsets, or ``BAT_UNUSED``)."""
    n = len(buf) // 4
    return struct.unpack(f">{n}I", buf[: 4 * n])


# --- reading a file into ImageInfo ---------------------------------------------------------------

#: BAT entries checked against the file size (bounded reads, issue 2)
BAT_CHECK_BYTES = 64 * 1024


def read_vhd(reader: ImageReader) -> ImageInfo:
    """Footer (checksum), head copy of dynamic/differencing disks, ``cxsparse`` header, BAT."""
    if reader.size < FOOTER_BYTES:
        raise ImageError(
            f"truncated VHD: {reader.size} bytes is less than one footer",
            fix=FIX_TRUNCATED,
        )
    tail = reader.read_at(reader.size - FOOTER_BYTES, FOOTER_BYTES, what="the VHD footer")
    if not tail.startswith(FOOTER_COOKIE):
        raise ImageError(
            "truncated VHD: there is a footer copy at the start but no footer at the end",
            fix=FIX_TRUNCATED,
        )
    footer = parse_footer(tail)
    check_footer(footer)
    problems: list[str] = []
    details: dict[str, object] = {
        "kind": "vhd",
        "creator_app": footer.creator_app.decode("latin-1"),
        "original_size": footer.original_size,
        "geometry": [footer.cylinders, footer.heads, footer.sectors_per_track],
        "unique_id": str(footer.unique_id),
    }
    if footer.disk_type == DISK_FIXED:
        data_bytes = reader.size - FOOTER_BYTES
        if data_bytes < footer.current_size:
            raise ImageError(
                f"truncated fixed VHD: the footer says {footer.current_size} bytes of data but the "
                f"file holds {data_bytes}",
                fix=FIX_TRUNCATED,
            )
        if data_bytes > footer.current_size:
            details["warnings"] = [
                f"{data_bytes - footer.current_size} bytes more data than the footer's size"
            ]
    else:
        head = reader.read_at(0, FOOTER_BYTES, what="the VHD footer copy")
        if head != tail:
            # readable (the footer at the end is the one the spec reads), only AWS refuses it:
            # a problem, not an error, so that manifestkit convert (which reads it) can run
            problems.append(
                "the VHD footer copy at the start differs from the footer at the end; AWS "
                f"refuses it ('Footers not identical'); re-export the VHD, or "
                f"{convert_fix(reader.path)}"
            )
        dyn = parse_dynamic_header(
            reader.read_at(
                dynamic_header_offset(footer, reader.size),
                DYNAMIC_HEADER_BYTES,
                what="the VHD dynamic header",
            )
        )
        check_dynamic_header(dyn, footer, reader.size)
        _check_bat(reader, dyn)
        details["block_size"] = dyn.block_size
        details["max_table_entries"] = dyn.max_table_entries
        if footer.disk_type == DISK_DIFFERENCING:
            details["parent_name"] = dyn.parent_name
            details["parent_unique_id"] = str(dyn.parent_unique_id)
    return ImageInfo(
        path=reader.path,
        format="VHD",
        subformat=footer.subformat,
        file_bytes=reader.size,
        capacity_bytes=footer.current_size,
        importable=True,
        problems=tuple(problems),
        details=details,
    )


def _check_bat(reader: ImageReader, dyn: DynamicHeader) -> None:
    n = min(dyn.max_table_entries * 4, BAT_CHECK_BYTES)
    entries = parse_bat(reader.read_at(dyn.table_offset, n, what="the VHD block table"))
    limit = reader.size - FOOTER_BYTES
    for i, sector in enumerate(entries):
        if sector != BAT_UNUSED and sector * SECTOR + dyn.bitmap_bytes + dyn.block_size > limit:
            raise ImageError(
                f"truncated VHD: block {i} at sector {sector} runs past the end of the data "
                f"({limit} bytes)",
                fix=FIX_TRUNCATED,
            )
