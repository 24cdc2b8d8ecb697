"""VMDK: the hosted sparse extent header, the text descriptor, stream markers (design.md §3).

Layouts from VMware's "Virtual Disk Format 1.1" specification, sections "Hosted Sparse Extent
Header", "The Descriptor File" and "Stream-Optimized Compressed Sparse Extents". The parse functions
are pure (bytes in, frozen dataclass out) and raise ``ImageError`` whose message does not name a
file: the caller (``manifestkit.images.inspect_image``) prefixes the path. Issue 6 reuses them.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping
from dataclasses import astuple, dataclass, field
from types import MappingProxyType

from manifestkit.errors import ImageError
from manifestkit.images.info import ImageInfo
from manifestkit.images.reader import FIX_TRUNCATED, ImageReader

SECTOR = 512
#: header.gdOffset meaning "the grain directory is at the end; read the footer" (spec: GD_AT_END)
GD_AT_END = 0xFFFFFFFFFFFFFFFF
_FIX_DAMAGED = "the file is damaged or not a VMDK; copy it again or re-export it"

FLAG_VALID_NEWLINE_TEST = 0x1
FLAG_REDUNDANT_GD = 0x2
FLAG_ZEROED_GRAIN_GTE = 0x4
FLAG_COMPRESSED = 0x10000
FLAG_MARKERS = 0x20000
#: bits 16..31 are "incompatible": a reader that does not know one must refuse the file
INCOMPATIBLE_FLAGS_MASK = 0xFFFF0000
KNOWN_INCOMPATIBLE_FLAGS = FLAG_COMPRESSED | FLAG_MARKERS

COMPRESSION_NONE = 0
COMPRESSION_DEFLATE = 1

#: bytes 73..76 of the header: "\n", " ", "\r", "\n" (detects FTP text-mode transfers)
NEWLINE_TEST = b"\n \r\n"

#: grain sizes are powers of two; qemu refuses above 512 MiB (2**20 sectors)
MAX_GRAIN_SECTORS = 1 << 20
#: VMDK's own limit is just under 64 TiB; anything bigger is a damaged header
MAX_CAPACITY_BYTES = 64 * 1024**4
MAX_GTES_PER_GT = 1 << 16
#: the largest grain directory an honest header gives: 64 TiB in 4 KiB grains (the spec's
#: smallest, "greater than 8" sectors) and 512-entry grain tables = 2**25 entries of 4 bytes
MAX_GD_BYTES = 128 * 1024**2
#: an embedded or stand-alone descriptor is a few KiB; more than this is not a descriptor
MAX_DESCRIPTOR_BYTES = 512 * 1024

# struct SparseExtentHeader, little-endian, packed (spec "Hosted Sparse Extent Header"):
#   0 magicNumber 4s | 4 version u32 | 8 flags u32 | 12 capacity u64 | 20 grainSize u64
#  28 descriptorOffset u64 | 36 descriptorSize u64 | 44 numGTEsPerGT u32 | 48 rgdOffset u64
#  56 gdOffset u64 | 64 overHead u64 | 72 uncleanShutdown u8
#  73 singleEndLineChar, nonEndLineChar, doubleEndLineChar1, doubleEndLineChar2 (4s)
#  77 compressAlgorithm u16 | 79 pad[433]
_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
SPARSE_MAGIC = b"KDMV"

# Markers (spec "Stream-Optimized Compressed Sparse Extents"): u64 val, u32 size, then for size == 0
# a u32 type; each marker starts on a sector boundary.
_MARKER = struct.Struct("<QII")
MARKER_EOS = 0
MARKER_GT = 1
MARKER_GD = 2
MARKER_FOOTER = 3
#: bytes before the compressed data in a grain marker (lba u64 + size u32)
GRAIN_MARKER_HEAD = 12


@dataclass(frozen=True)
class SparseHeader:
    """The header's fields after the magic, in on-disk order (``_HEADER``)."""

    version: int
    flags: int
    #: sectors
    capacity: int
    #: sectors
    grain_size: int
    #: sectors
    descriptor_offset: int
    #: sectors
    descriptor_size: int
    num_gtes_per_gt: int
    #: sectors
    rgd_offset: int
    #: sectors, or GD_AT_END
    gd_offset: int
    #: sectors
    overhead: int
    unclean_shutdown: int
    newline_test: bytes
    compress_algorithm: int

    @property
    def capacity_bytes(self) -> int:
        return self.capacity * SECTOR

    @property
    def grain_bytes(self) -> int:
        return self.grain_size * SECTOR

    @property
    def compressed(self) -> bool:
        return bool(self.flags & FLAG_COMPRESSED)

    @property
    def has_markers(self) -> bool:
        return bool(self.flags & FLAG_MARKERS)

    @property
    def num_grains(self) -> int:
        return -(-self.capacity // self.grain_size)

    @property
    def num_gd_entries(self) -> int:
        return -(-self.num_grains // self.num_gtes_per_gt)


def parse_sparse_header(buf: bytes) -> SparseHeader:
    """Decode a 512-byte hosted sparse extent header; checks only the magic (then call
    ``check_sparse_header``)."""
    if len(buf) < _HEADER.size:
        raise ImageError(
            f"truncated VMDK header ({len(buf)} of 512 bytes)",
            fix=FIX_TRUNCATED,
        )
    magic, *fields = _HEADER.unpack_from(buf)
    if magic != SPARSE_MAGIC:
        raise ImageError(
            f"bad VMDK sparse header magic {magic!r} (expected b'KDMV')", fix=_FIX_DAMAGED
        )
    return SparseHeader(*fields)  # SparseHeader declares its fields in _HEADER's order


def pack_sparse_header(h: SparseHeader) -> bytes:
    """The 512-byte encoding of ``h`` (tests and the converter write headers with it)."""
    body = _HEADER.pack(SPARSE_MAGIC, *astuple(h))
    return body.ljust(SECTOR, b"\0")


def check_sparse_header(h: SparseHeader, file_bytes: int, *, allow_gd_at_end: bool = True) -> None:
    """Refuse a header whose fields are nonsense or point past the end of a ``file_bytes`` file."""

    def bad(what: str) -> ImageError:
        return ImageError(f"VMDK header: {what}", fix=_FIX_DAMAGED)

    if not 1 <= h.version <= 3:
        raise bad(f"version {h.version} is not supported (1-3 are)")
    unknown = h.flags & INCOMPATIBLE_FLAGS_MASK & ~KNOWN_INCOMPATIBLE_FLAGS
    if unknown:
        raise bad(f"unknown incompatible flags 0x{unknown:08x}")
    if h.flags & FLAG_VALID_NEWLINE_TEST and h.newline_test != NEWLINE_TEST:
        raise ImageError(
            "VMDK header: newline test bytes are damaged (was the file copied in text mode?)",
            fix="copy the file again in binary mode",
        )
    if h.grain_size == 0 or h.grain_size & (h.grain_size - 1):
        raise bad(f"grainSize {h.grain_size} is not a power of two")
    if h.grain_size > MAX_GRAIN_SECTORS:
        raise bad(f"grainSize {h.grain_size} sectors is absurd")
    if h.capacity == 0:
        raise bad("capacity is 0")
    if h.capacity * SECTOR > MAX_CAPACITY_BYTES:
        raise bad(f"capacity {h.capacity} sectors is absurd (more than 64 TiB)")
    if not 1 <= h.num_gtes_per_gt <= MAX_GTES_PER_GT:
        raise bad(f"numGTEsPerGT {h.num_gtes_per_gt} is absurd")
    if h.num_gd_entries * 4 > MAX_GD_BYTES:
        raise bad(
            f"a grain directory of {h.num_gd_entries} entries (grainSize {h.grain_size}, "
            f"numGTEsPerGT {h.num_gtes_per_gt}) is absurd"
        )
    if h.compress_algorithm not in (COMPRESSION_NONE, COMPRESSION_DEFLATE):
        raise bad(f"compressAlgorithm {h.compress_algorithm} is unknown (0 none, 1 deflate)")
    sectors = file_bytes // SECTOR
    if h.descriptor_offset:
        if h.descriptor_size * SECTOR > MAX_DESCRIPTOR_BYTES:
            raise bad(f"descriptorSize {h.descriptor_size} sectors is absurd")
        if h.descriptor_offset + h.descriptor_size > sectors:
            raise bad(
                f"descriptor at sector {h.descriptor_offset} (+{h.descriptor_size}) is past the "
                f"end of the file ({sectors} sectors)"
            )
    if h.gd_offset == GD_AT_END:
        if not allow_gd_at_end:
            raise bad("the footer's gdOffset is also 'at end'")
    elif h.gd_offset == 0 or h.gd_offset >= sectors:
        raise bad(f"gdOffset {h.gd_offset} is outside the file ({sectors} sectors)")
    if h.flags & FLAG_REDUNDANT_GD and h.rgd_offset >= sectors:
        raise bad(f"rgdOffset {h.rgd_offset} is outside the file ({sectors} sectors)")
    if h.overhead > sectors:
        raise bad(f"overHead {h.overhead} sectors is past the end of the file ({sectors} sectors)")


# --- markers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Marker:
    """A stream marker: a grain (``size`` > 0, ``value`` = lba) or metadata (``size`` == 0)."""

    #: grain: the grain's first sector (lba); metadata: sectors of metadata that follow
    value: int
    #: compressed bytes following a grain marker; 0 for metadata markers
    size: int
    #: metadata type (MARKER_EOS/GT/GD/FOOTER); None for grain markers
    type: int | None

    @property
    def is_grain(self) -> bool:
        return self.size != 0


def parse_marker(buf: bytes) -> Marker:
    """Decode the first 16 bytes of a sector as a marker."""
    if len(buf) < _MARKER.size:
        raise ImageError(
            f"truncated stream marker ({len(buf)} of 16 bytes)",
            fix=FIX_TRUNCATED,
        )
    value, size, mtype = _MARKER.unpack_from(buf)
    if size:
        return Marker(value, size, None)
    return Marker(value, 0, mtype)


def pack_metadata_marker(mtype: int, value: int = 0) -> bytes:
    return _MARKER.pack(value, 0, mtype).ljust(SECTOR, b"\0")


def pack_grain_marker(lba: int, compressed: bytes) -> bytes:
    """A grain marker with its data, padded to a whole sector."""
    raw = struct.pack("<QI", lba, len(compressed)) + compressed
    return raw.ljust(-(-len(raw) // SECTOR) * SECTOR, b"\0")


# --- descriptor ----------------------------------------------------------------------------------

#: extent line: ``RW 6169 SPARSE "d.vmdk"`` / ``RW 9766 FLAT "d-flat.vmdk" 0`` / ``RW 100 ZERO``
_EXTENT = re.compile(
    r"^(?P<access>RW|RDONLY|NOACCESS)\s+(?P<sectors>\d+)\s+(?P<type>[A-Za-z]+)"
    r'(?:\s+"(?P<filename>[^"]*)"(?:\s+(?P<offset>\d+))?)?\s*$'
)
_KEY_VALUE = re.compile(r"^(?P<key>[A-Za-z0-9_.:\-]+)\s*=\s*(?P<value>.*?)\s*$")
#: control characters other than tab/CR/LF mark binary garbage
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(frozen=True)
class Extent:
    access: str
    sectors: int
    #: SPARSE, FLAT, ZERO, VMFS, VMFSSPARSE, VMFSRDM, VMFSRAW, SESPARSE...
    type: str
    filename: str | None
    #: FLAT extents: sector offset inside ``filename``
    offset: int | None = None


@dataclass(frozen=True)
class Descriptor:
    create_type: str
    extents: tuple[Extent, ...]
    #: ``ddb.*`` keys (without quotes around values)
    ddb: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: the other ``key=value`` lines (version, CID, parentCID, encoding, parentFileNameHint...)
    fields: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def capacity_sectors(self) -> int:
        return sum(e.sectors for e in self.extents)

    @property
    def parent_cid(self) -> str | None:
        return self.fields.get("parentCID")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def decode_descriptor(raw: bytes) -> str:
    """Descriptor bytes (embedded ones are NUL-padded) to text; garbage raises ``ImageError``."""
    text_bytes = raw.split(b"\0", 1)[0]
    if len(text_bytes) > MAX_DESCRIPTOR_BYTES:
        raise ImageError(
            f"descriptor is larger than {MAX_DESCRIPTOR_BYTES} bytes: not a descriptor",
            fix="check that this is the right file",
        )
    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError:
        text = text_bytes.decode("latin-1")  # old descriptors say encoding="windows-1252"
    if _CONTROL.search(text):
        raise ImageError("descriptor text contains binary data", fix=_FIX_DAMAGED)
    return text


def parse_descriptor(text: str) -> Descriptor:
    """Parse ``createType``, extent lines and ``ddb.*`` keys (spec "The Descriptor File")."""
    if len(text) > MAX_DESCRIPTOR_BYTES:
        raise ImageError(
            f"descriptor is larger than {MAX_DESCRIPTOR_BYTES} bytes: not a descriptor",
            fix="check that this is the right file",
        )
    extents: list[Extent] = []
    ddb: dict[str, str] = {}
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _EXTENT.match(line)
        if match:
            offset = match.group("offset")
            extents.append(
                Extent(
                    access=match.group("access"),
                    sectors=int(match.group("sectors")),
                    type=match.group("type").upper(),
                    filename=match.group("filename"),
                    offset=int(offset) if offset is not None else None,
                )
            )
            continue
        match = _KEY_VALUE.match(line)
        if match:
            key, value = match.group("key"), _unquote(match.group("value"))
            (ddb if key.startswith("ddb.") else fields)[key] = value
            continue
        snippet = line if len(line) <= 40 else line[:37] + "..."
        raise ImageError(
            f"descriptor line {number} is not descriptor syntax: {snippet!r}", fix=_FIX_DAMAGED
        )
    create_type = fields.get("createType")
    if not create_type:
        raise ImageError("descriptor has no createType", fix=_FIX_DAMAGED)
    if not extents:
        raise ImageError("descriptor lists no extents", fix=_FIX_DAMAGED)
    return Descriptor(
        create_type=create_type,
        extents=tuple(extents),
        ddb=MappingProxyType(ddb),
        fields=MappingProxyType(fields),
    )


# --- ESX sparse (COWD) and seSparse: recognised, capacity read, never importable ------------------

# COWDisk_Header (spec "ESX Server Sparse Extent Header"): 0 magic 'COWD', 4 version u32,
# 8 flags u32, 12 numSectors u32 (capacity), 16 grainSize u32, 20 gdOffset u32, 24 numGDEntries u32
_COWD = struct.Struct("<4sIIIIII")
# SESparseConstHeader: 0 magic u64 0xCAFEBABE, 8 version u64, 16 capacity u64 (sectors),
# 24 grainSize
_SESPARSE = struct.Struct("<QQQQ")


@dataclass(frozen=True)
class VmfsSparseHeader:
    """What a COWD (vmfsSparse) or seSparse header says: enough to report, never to import."""

    version: int
    #: sectors
    capacity: int
    #: sectors
    grain_size: int


def parse_cowd_header(buf: bytes) -> VmfsSparseHeader:
    if len(buf) < _COWD.size:
        raise ImageError("truncated COWD header", fix=FIX_TRUNCATED)
    magic, version, _flags, capacity, grain, _gd, _n = _COWD.unpack_from(buf)
    if magic != b"COWD":
        raise ImageError(f"bad COWD magic {magic!r}", fix=_FIX_DAMAGED)
    if capacity == 0:
        raise ImageError("COWD header: capacity is 0", fix=_FIX_DAMAGED)
    return VmfsSparseHeader(version, capacity, grain)


def parse_sesparse_header(buf: bytes) -> VmfsSparseHeader:
    if len(buf) < _SESPARSE.size:
        raise ImageError("truncated seSparse header", fix=FIX_TRUNCATED)
    magic, version, capacity, grain = _SESPARSE.unpack_from(buf)
    if magic != 0xCAFEBABE:
        raise ImageError(f"bad seSparse magic 0x{magic:x}", fix=_FIX_DAMAGED)
    if capacity == 0 or capacity * SECTOR > MAX_CAPACITY_BYTES:
        raise ImageError(
            f"seSparse header: capacity {capacity} sectors is absurd", fix=_FIX_DAMAGED
        )
    return VmfsSparseHeader(version, capacity, grain)


# --- reading a file into ImageInfo ---------------------------------------------------------------

#: the grain directory is checked entry by entry up to this many bytes (bounded reads, issue 2)
GD_CHECK_BYTES = 128 * 1024


def _read_embedded_descriptor(reader: ImageReader, h: SparseHeader) -> Descriptor | None:
    if not h.descriptor_offset:
        return None
    raw = reader.read_at(
        h.descriptor_offset * SECTOR, h.descriptor_size * SECTOR, what="the embedded descriptor"
    )
    text = decode_descriptor(raw)
    if not text.strip():
        return None  # qemu-img reserves the space in split-disk extents and leaves it empty
    return parse_descriptor(text)


def stream_layout(reader: ImageReader, h: SparseHeader) -> tuple[SparseHeader, str]:
    """The header that holds the real gdOffset, and the streamOptimized layout name.

    (a) ``footer``: header gdOffset = GD_AT_END; the last three sectors are a footer marker, a
        footer copy of the header with the real gdOffset, and the end-of-stream marker (VMware).
    (b) ``gd-first-eos``: gdOffset real, stream ends with an end-of-stream marker (open-vmdk).
    (c) ``gd-first``: gdOffset real, no end-of-stream marker (qemu-img may leave it out).
    """
    if h.gd_offset == GD_AT_END:
        if reader.size < 4 * SECTOR:
            raise ImageError(
                "truncated streamOptimized VMDK: the header says the grain directory is at the end "
                "but the file is too short for a footer",
                fix=FIX_TRUNCATED,
            )
        tail = reader.read_at(reader.size - 3 * SECTOR, 3 * SECTOR, what="the VMDK footer")
        footer_marker = parse_marker(tail[:SECTOR])
        eos = parse_marker(tail[2 * SECTOR :])
        if footer_marker.type != MARKER_FOOTER or footer_marker.is_grain:
            raise ImageError(
                "streamOptimized VMDK has no footer marker at end of file-1536 although its header "
                "says the grain directory is at the end: truncated or damaged",
                fix=FIX_TRUNCATED,
            )
        if eos.is_grain or eos.type != MARKER_EOS:
            raise ImageError(
                "streamOptimized VMDK has no end-of-stream marker after its footer: truncated",
                fix=FIX_TRUNCATED,
            )
        try:
            footer = parse_sparse_header(tail[SECTOR : 2 * SECTOR])
        except ImageError as exc:
            raise ImageError(f"VMDK footer: {exc.message}", fix=exc.fix) from None
        check_sparse_header(footer, reader.size, allow_gd_at_end=False)
        if footer.capacity != h.capacity or footer.grain_size != h.grain_size:
            raise ImageError(
                "VMDK footer disagrees with the header (capacity or grain size)", fix=_FIX_DAMAGED
            )
        return footer, "footer"
    last = parse_marker(reader.read_at(reader.size - SECTOR, SECTOR, what="the last sector"))
    has_eos = not last.is_grain and last.type == MARKER_EOS and last.value == 0
    return h, "gd-first-eos" if has_eos else "gd-first"


def _check_grain_directory(
    reader: ImageReader, h: SparseHeader, what: str, offset: int
) -> dict[int, int]:
    """The GD fits in the file, and so does each grain table it points to: the entries of its
    first and last ``GD_CHECK_BYTES`` (bounded reads, issue 2), returned by GD index."""
    gd_bytes = h.num_gd_entries * 4
    start = offset * SECTOR
    if start + gd_bytes > reader.size:
        raise ImageError(
            f"truncated VMDK: the {what} ({h.num_gd_entries} entries at sector {offset}) runs "
            f"past the end of the file ({reader.size} bytes)",
            fix=FIX_TRUNCATED,
        )
    head = min(gd_bytes, GD_CHECK_BYTES) // 4
    windows = [(0, head)]
    if h.num_gd_entries > head:  # the last tables cover the last grains written: read them too
        windows.append((max(head, h.num_gd_entries - GD_CHECK_BYTES // 4), h.num_gd_entries))
    gt_bytes = h.num_gtes_per_gt * 4
    entries: dict[int, int] = {}
    for first, stop in windows:
        buf = reader.read_at(start + first * 4, (stop - first) * 4, what=f"the {what}")
        for i, sector in enumerate(struct.unpack(f"<{stop - first}I", buf), first):
            if sector and sector * SECTOR + gt_bytes > reader.size:
                raise ImageError(
                    f"truncated VMDK: {what} entry {i} points to a grain table at sector "
                    f"{sector}, past the end of the file ({reader.size} bytes)",
                    fix=FIX_TRUNCATED,
                )
            entries[i] = sector
    return entries


#: bytes of grain tables ``inspect`` reads to find where the stream's data ends (issue 11 item 2)
GT_CHECK_BYTES = 128 * 1024
#: a grain table entry of 1 is a grain of zeros (FLAG_ZEROED_GRAIN_GTE), not a sector
_ZERO_GRAIN_GTE = 1


def _check_last_grains(reader: ImageReader, h: SparseHeader, gd: dict[int, int]) -> None:
    """A streamOptimized file holds the grains its grain tables point at.

    qemu-img's layout (GD and tables first, no end-of-stream marker) gives no other sign of a
    file cut short. Within the read budget: the last ``GT_CHECK_BYTES`` of grain tables, every
    entry inside the file, and the grain marker at the highest offset among them (spec "Grain
    Marker": u64 lba, u32 size, then ``size`` bytes) names that grain and ends in the file.
    """
    gtes = h.num_gtes_per_gt
    highest = (0, 0)  # (sector, lba)
    budget = GT_CHECK_BYTES
    for index in sorted((i for i, s in gd.items() if s), reverse=True):
        if budget < gtes * 4:
            break
        budget -= gtes * 4
        table = reader.read_at(gd[index] * SECTOR, gtes * 4, what=f"grain table {index}")
        for j, sector in enumerate(struct.unpack(f"<{gtes}I", table)):
            if sector <= _ZERO_GRAIN_GTE:
                continue
            lba = (index * gtes + j) * h.grain_size
            if sector * SECTOR + GRAIN_MARKER_HEAD > reader.size:
                raise ImageError(
                    f"truncated VMDK: grain table {index} puts the grain of sector {lba} at byte "
                    f"{sector * SECTOR}, past the end of the file ({reader.size} bytes)",
                    fix=FIX_TRUNCATED,
                )
            highest = max(highest, (sector, lba))
    sector, lba = highest
    if not sector:
        return
    offset = sector * SECTOR
    marker = parse_marker(reader.read_at(offset, min(16, reader.size - offset), what="a grain"))
    if not marker.is_grain or marker.value != lba:
        raise ImageError(
            f"damaged VMDK: the grain table puts sector {lba} at byte {offset}, but no grain "
            "marker for it is there",
            fix=_FIX_DAMAGED,
        )
    if offset + GRAIN_MARKER_HEAD + marker.size > reader.size:
        raise ImageError(
            f"truncated VMDK: the grain of sector {lba} at byte {offset} needs "
            f"{GRAIN_MARKER_HEAD + marker.size} bytes, the file ends {reader.size - offset} bytes "
            "after its start",
            fix=FIX_TRUNCATED,
        )


def read_sparse(reader: ImageReader) -> ImageInfo:
    """A hosted sparse extent (``KDMV``): monolithicSparse, streamOptimized, or a split extent."""
    h = parse_sparse_header(reader.read_at(0, SECTOR, what="the VMDK header"))
    check_sparse_header(h, reader.size)
    descriptor = _read_embedded_descriptor(reader, h)
    stream = h.has_markers and h.compressed
    layout = None
    real = h
    if stream or h.gd_offset == GD_AT_END:
        real, layout = stream_layout(reader, h)
    gd = _check_grain_directory(reader, real, "grain directory", real.gd_offset)
    if stream:
        _check_last_grains(reader, real, gd)
    if real.flags & FLAG_REDUNDANT_GD and real.rgd_offset and not stream:
        _check_grain_directory(reader, real, "redundant grain directory", real.rgd_offset)
    subformat = descriptor.create_type if descriptor else "sparseExtent"
    problems: list[str] = []
    details: dict[str, object] = {
        "kind": "vmdk-sparse",
        "version": real.version,
        "flags": f"0x{real.flags:08x}",
        "grain_bytes": real.grain_bytes,
        "compress_algorithm": real.compress_algorithm,
        "markers": real.has_markers,
        "unclean_shutdown": bool(h.unclean_shutdown),
    }
    if layout:
        details["layout"] = layout
    if descriptor:
        details["descriptor"] = {
            "createType": descriptor.create_type,
            "extents": [e.__dict__ for e in descriptor.extents],
            "ddb": dict(descriptor.ddb),
            "parentCID": descriptor.parent_cid,
            "parentFileNameHint": descriptor.fields.get("parentFileNameHint"),
        }
        if descriptor.capacity_sectors != real.capacity:
            details.setdefault("warnings", []).append(  # type: ignore[union-attr]
                f"the descriptor's extents add up to {descriptor.capacity_sectors} sectors but the "
                f"header says {real.capacity}; using the header"
            )
    return ImageInfo(
        path=reader.path,
        format="VMDK",
        subformat=subformat,
        file_bytes=reader.size,
        capacity_bytes=real.capacity_bytes,
        importable=True,
        problems=tuple(problems),
        details=details,
    )


def read_descriptor_file(reader: ImageReader) -> ImageInfo:
    """A stand-alone descriptor (monolithicFlat, twoGbMaxExtent*, vmfs): capacity from extents."""
    if reader.size > MAX_DESCRIPTOR_BYTES:
        raise ImageError(
            f"starts like a VMDK descriptor but is {reader.size} bytes; descriptors are text files "
            f"of at most {MAX_DESCRIPTOR_BYTES} bytes",
            fix="check that this is the right file",
        )
    descriptor = parse_descriptor(
        decode_descriptor(reader.read_at(0, reader.size, what="descriptor"))
    )
    folder = os.path.dirname(reader.path)
    extents = []
    missing = []
    for e in descriptor.extents:
        entry = dict(e.__dict__)
        if e.filename is not None:
            exists = os.path.isfile(os.path.join(folder, e.filename))
            entry["exists"] = exists
            if not exists:
                missing.append(e.filename)
        extents.append(entry)
    details: dict[str, object] = {
        "kind": "vmdk-descriptor",
        "descriptor": {
            "createType": descriptor.create_type,
            "extents": extents,
            "ddb": dict(descriptor.ddb),
            "parentCID": descriptor.parent_cid,
            "parentFileNameHint": descriptor.fields.get("parentFileNameHint"),
        },
        "extent_files": [e.filename for e in descriptor.extents if e.filename is not None],
    }
    if missing:
        details["missing_extent_files"] = missing
    if descriptor.capacity_sectors == 0:
        raise ImageError("descriptor extents add up to 0 sectors", fix=_FIX_DAMAGED)
    if descriptor.capacity_sectors * SECTOR > MAX_CAPACITY_BYTES:
        raise ImageError("descriptor extents add up to more than 64 TiB", fix=_FIX_DAMAGED)
    return ImageInfo(
        path=reader.path,
        format="VMDK",
        subformat=descriptor.create_type,
        file_bytes=reader.size,
        capacity_bytes=descriptor.capacity_sectors * SECTOR,
        importable=True,
        details=details,
    )


def read_cowd(reader: ImageReader) -> ImageInfo:
    h = parse_cowd_header(reader.read_at(0, _COWD.size, what="the COWD header"))
    return _vmfs_sparse_info(reader, h, "vmfsSparse", "vmdk-cowd")


def read_sesparse(reader: ImageReader) -> ImageInfo:
    h = parse_sesparse_header(reader.read_at(0, _SESPARSE.size, what="the seSparse header"))
    return _vmfs_sparse_info(reader, h, "seSparse", "vmdk-sesparse")


def _vmfs_sparse_info(
    reader: ImageReader, h: VmfsSparseHeader, subformat: str, kind: str
) -> ImageInfo:
    # importable=True here: the import rules (images/rules.py) refuse these subformats in one place
    return ImageInfo(
        path=reader.path,
        format="VMDK",
        subformat=subformat,
        file_bytes=reader.size,
        capacity_bytes=h.capacity * SECTOR,
        importable=True,
        details={"kind": kind, "version": h.version, "grain_bytes": h.grain_size * SECTOR},
    )
