"""Sniff an image's format from its content, never from its name (issue 2, design.md §3).

Signatures looked at (offset: bytes):
- VMDK hosted sparse extent: 0: ``KDMV`` (VMware "Virtual Disk Format 1.1", hosted sparse header)
- VMDK ESX sparse (vmfsSparse): 0: ``COWD``; seSparse: 0: u64 LE 0xCAFEBABE
- VMDK text descriptor: first line ``# Disk DescriptorFile`` (or ``# Disk Descriptor File``)
- VHD: EOF-512: ``conectix`` (VHD spec, "Hard Disk Footer Format"); dynamic disks also at 0
- not importable at all: qcow2 0: ``QFI\\xfb``; VHDX 0: ``vhdxfile``; VDI 0x40: u32 LE 0xBEDA107F;
  QED 0: ``QED\\0``; Parallels 0: ``WithoutFreeSpace`` / ``WithouFreSpacExt``
- not a disk image but an archive holding one (a downloaded ``disk.vmdk.gz``, an OVA):
  gzip 0: ``1f 8b 08``; xz 0: ``fd 37 7a 58 5a 00``; bzip2 0: ``BZh1``-``BZh9``;
  zstd 0: ``28 b5 2f fd``; zip 0: ``PK\\3\\4``; tar (OVA) 257: ``ustar`` (POSIX ustar header).
  A disk's first sector is boot code or zeros, never these.
- RAW: anything else.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

from manifestkit.images.reader import ImageReader

#: how much of the head and tail detection looks at
HEAD_BYTES = 4096
TAIL_BYTES = 512

VMDK_SPARSE_MAGIC = b"KDMV"
VMDK_COWD_MAGIC = b"COWD"
SESPARSE_MAGIC = struct.pack("<Q", 0xCAFEBABE)
VHD_COOKIE = b"conectix"
QCOW_MAGIC = b"QFI\xfb"
VHDX_MAGIC = b"vhdxfile"
VDI_SIGNATURE = struct.pack("<I", 0xBEDA107F)
VDI_SIGNATURE_OFFSET = 0x40
QED_MAGIC = b"QED\0"
PARALLELS_MAGICS = (b"WithoutFreeSpace", b"WithouFreSpacExt")
TAR_MAGIC = b"ustar"
TAR_MAGIC_OFFSET = 257
#: archive kind -> (leading bytes (or a tuple of them), what it is, the command that undoes it)
ARCHIVE_MAGICS: dict[str, tuple[bytes | tuple[bytes, ...], str, str]] = {
    # gzip's magic and its only method (8, deflate); bzip2's magic and a block size 1-9
    "gzip": (b"\x1f\x8b\x08", "gzip-compressed file", "decompress it first: gunzip -k"),
    "xz": (b"\xfd7zXZ\x00", "xz-compressed file", "decompress it first: xz -dk"),
    "bzip2": (
        tuple(b"BZh%d" % n for n in range(1, 10)),
        "bzip2-compressed file",
        "decompress it first: bunzip2 -k",
    ),
    "zstd": (b"\x28\xb5\x2f\xfd", "zstd-compressed file", "decompress it first: zstd -d"),
    "zip": (b"PK\x03\x04", "zip archive", "extract the disk image first: unzip"),
}

#: writers differ: VMware writes ``# Disk DescriptorFile``, others ``# Disk Descriptor File``
DESCRIPTOR_FIRST_LINE = re.compile(rb"^\s*#\s*disk\s*descriptor\s*file\s*$", re.IGNORECASE)

# Detected.kind values
VMDK_SPARSE = "vmdk-sparse"
VMDK_DESCRIPTOR = "vmdk-descriptor"
VMDK_COWD = "vmdk-cowd"
VMDK_SESPARSE = "vmdk-sesparse"
VHD = "vhd"
RAW = "raw"
QCOW2 = "qcow2"
VHDX = "vhdx"
VDI = "vdi"
QED = "qed"
PARALLELS = "parallels"
TAR = "tar"


@dataclass(frozen=True)
class Detected:
    #: one of the kind constants above (``vmdk-sparse``, ``vhd``, ``qcow2``...)
    kind: str
    #: ``VMDK`` | ``VHD`` | ``RAW`` (EC2 ``Image.Format``), or ``QCOW2`` | ``VHDX`` | ``VDI`` |
    #: ``QED`` | ``PARALLELS``, or ``ARCHIVE`` (compressed or archived, not a disk image)
    format: str
    #: what to call it in messages, e.g. "VMDK sparse extent", "qcow2"
    name: str

    @property
    def ec2_format(self) -> bool:
        """True when ImportInstance has a format name for this family at all."""
        return self.format in ("VMDK", "VHD", "RAW")


_KINDS = {
    VMDK_SPARSE: ("VMDK", "VMDK sparse extent"),
    VMDK_DESCRIPTOR: ("VMDK", "VMDK text descriptor"),
    VMDK_COWD: ("VMDK", "VMDK ESX sparse (COWD, vmfsSparse)"),
    VMDK_SESPARSE: ("VMDK", "VMDK seSparse"),
    VHD: ("VHD", "VHD"),
    RAW: ("RAW", "raw"),
    QCOW2: ("QCOW2", "qcow2"),
    VHDX: ("VHDX", "VHDX"),
    VDI: ("VDI", "VirtualBox VDI"),
    QED: ("QED", "QED"),
    PARALLELS: ("PARALLELS", "Parallels"),
    TAR: ("ARCHIVE", "tar archive (an OVA?)"),
    **{kind: ("ARCHIVE", name) for kind, (_, name, _) in ARCHIVE_MAGICS.items()},
}
#: how to get a disk image out of an archive kind (the file's path follows)
ARCHIVE_FIXES = {
    TAR: "extract the disk image first: tar xf",
    **{kind: fix for kind, (_, _, fix) in ARCHIVE_MAGICS.items()},
}


def _detected(kind: str) -> Detected:
    family, name = _KINDS[kind]
    return Detected(kind, family, name)


def looks_like_descriptor(head: bytes) -> bool:
    """True when the first non-blank line is the descriptor's first line."""
    for line in head.split(b"\n", 8):
        if line.strip():
            return bool(DESCRIPTOR_FIRST_LINE.match(line.rstrip(b"\r")))
    return False


def detect_bytes(head: bytes, tail: bytes) -> Detected:
    """Pure detection from the first ``HEAD_BYTES`` and last ``TAIL_BYTES`` of a file."""
    if head.startswith(VMDK_SPARSE_MAGIC):
        return _detected(VMDK_SPARSE)
    if head.startswith(VMDK_COWD_MAGIC):
        return _detected(VMDK_COWD)
    if head.startswith(SESPARSE_MAGIC):
        return _detected(VMDK_SESPARSE)
    if head.startswith(QCOW_MAGIC):
        return _detected(QCOW2)
    if head.startswith(VHDX_MAGIC):
        return _detected(VHDX)
    if head[VDI_SIGNATURE_OFFSET : VDI_SIGNATURE_OFFSET + 4] == VDI_SIGNATURE:
        return _detected(VDI)
    if head.startswith(QED_MAGIC):
        return _detected(QED)
    if head.startswith(PARALLELS_MAGICS):
        return _detected(PARALLELS)
    for kind, (magic, _, _) in ARCHIVE_MAGICS.items():
        if head.startswith(magic):
            return _detected(kind)
    if head[TAR_MAGIC_OFFSET : TAR_MAGIC_OFFSET + len(TAR_MAGIC)] == TAR_MAGIC:
        return _detected(TAR)
    # a VHD footer at the end, or its copy at the start of a dynamic disk (the tail may be damaged)
    if (len(tail) >= 512 and tail[-512:].startswith(VHD_COOKIE)) or head.startswith(VHD_COOKIE):
        return _detected(VHD)
    if looks_like_descriptor(head):
        return _detected(VMDK_DESCRIPTOR)
    return _detected(RAW)


def detect_reader(reader: ImageReader) -> Detected:
    head = reader.read_at(0, min(HEAD_BYTES, reader.size), what="the first sector")
    tail = (
        reader.read_at(reader.size - TAIL_BYTES, TAIL_BYTES) if reader.size >= TAIL_BYTES else b""
    )
    return detect_bytes(head, tail)


def detect(path: str | os.PathLike[str]) -> Detected:
    """Detect the format of the file at ``path`` (reads at most 4.5 KiB); ``ImageError`` if not."""
    with ImageReader(path) as reader:
        return detect_reader(reader)


#: extension → family, for the "the name says X but the content is Y" warning only
EXTENSION_FORMATS = {
    ".vmdk": "VMDK",
    ".vhd": "VHD",
    ".raw": "RAW",
    ".dd": "RAW",
    ".qcow2": "QCOW2",
    ".qcow": "QCOW2",
    ".vhdx": "VHDX",
    ".vdi": "VDI",
}


def format_from_extension(path: str | os.PathLike[str]) -> str | None:
    """The family the file name suggests, or None (``.img``, ``.bin`` say nothing)."""
    return EXTENSION_FORMATS.get(os.path.splitext(os.fspath(path))[1].lower())
