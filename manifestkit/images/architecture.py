"""The CPU architecture a disk image declares, when it declares one — and nothing is guessed.

The only declaration read is the partition types of the UAPI Group's Discoverable Partitions
Specification (DPS): a GPT root or ``/usr`` partition has a type GUID per architecture
(``systemd-id128 show`` lists them; systemd-gpt-auto-generator mounts by them). An MBR disk, a
GPT without such a partition (FreeBSD's, a plain "Linux filesystem"), a table whose CRCs do not
match, or an image that cannot be read as a disk declares nothing: the answer is empty, and the
caller says nothing.

GPT layout (UEFI Specification 2.10, §5.3.2 "GPT Header", §5.3.3 "GPT Partition Entry Array"):
the header is at LBA 1; little-endian fields: signature ``EFI PART`` at 0, header size (u32) at
12, header CRC32 (u32, computed with this field zeroed) at 16, partition entry LBA (u64) at 72,
number of entries (u32) at 80, entry size (u32, 128 x 2^n) at 84, entry array CRC32 (u32) at 88.
An entry starts with its 16-byte partition type GUID, stored mixed-endian (``UUID(bytes_le=)``).
"""

from __future__ import annotations

import os
import struct
import uuid
import zlib
from collections.abc import Callable

from manifestkit.errors import ManifestkitError

#: DPS root and /usr partition types -> the architecture, named as EC2 names it where EC2 has it
#: (``i386`` is DPS's ``x86``); values from systemd 252's ``systemd-id128 show``
DPS_ARCHITECTURES: dict[uuid.UUID, str] = {
    uuid.UUID(guid): arch
    for guid, arch in (
        ("4f68bce3-e8cd-4db1-96e7-fbcaf984b709", "x86_64"),  # root-x86-64
        ("8484680c-9521-48c6-9c11-b0720656f69e", "x86_64"),  # usr-x86-64
        ("44479540-f297-41b2-9af7-d131d5f0458a", "i386"),  # root-x86
        ("75250d76-8cc6-458e-bd66-bd47cc81a812", "i386"),  # usr-x86
        ("b921b045-1df0-41c3-af44-4c6f280d3fae", "arm64"),  # root-arm64
        ("b0e01050-ee5f-4390-949a-9101b17104e9", "arm64"),  # usr-arm64
        ("69dad710-2ce4-4e3c-b16c-21a1d49abed3", "arm"),  # root-arm
        ("7d0359a3-02b3-4f0a-865c-654403e70625", "arm"),  # usr-arm
        ("72ec70a6-cf74-40e6-bd49-4bda08e8f224", "riscv64"),  # root-riscv64
        ("beaec34b-8442-439b-a40b-984381ed097d", "riscv64"),  # usr-riscv64
        ("c31c45e6-3f39-412e-80fb-4809c4980599", "ppc64le"),  # root-ppc64-le
        ("15bb03af-77e7-4d4a-b12b-c0d084f7491c", "ppc64le"),  # usr-ppc64-le
        ("5eead9a9-fe09-4a1e-a1d7-520d00531306", "s390x"),  # root-s390x
        ("8a4f5770-50aa-4ed3-874a-99b710db6fea", "s390x"),  # usr-s390x
        ("77055800-792c-4f94-b39a-98c91b762bb6", "loongarch64"),  # root-loongarch64
        ("e611c702-575c-4cbe-9a46-434fa0bf7e3f", "loongarch64"),  # usr-loongarch64
    )
}

_SIGNATURE = b"EFI PART"
_HEADER = struct.Struct("<8sIII")  # signature, revision, header size, header CRC32
_ARRAY = struct.Struct("<QIII")  # entry LBA, number of entries, entry size, array CRC32
#: bounds on what is read (the table is untrusted input): 128 entries of 128 bytes is usual
_MAX_ENTRIES = 1024
_MAX_ARRAY_BYTES = 1 << 20


Reader = Callable[[int, int], bytes]


def _header_at(read: Reader, sector: int) -> tuple[int, int, int, int] | None:
    """(entry offset, entries, entry size, array CRC) of a valid GPT header at LBA 1, or None."""
    raw = read(sector, sector)
    signature, _revision, size, crc = _HEADER.unpack_from(raw, 0)
    if signature != _SIGNATURE or not 92 <= size <= sector:
        return None
    header = bytearray(raw[:size])
    header[16:20] = b"\0\0\0\0"
    if zlib.crc32(header) != crc:
        return None
    entry_lba, count, entry_size, array_crc = _ARRAY.unpack_from(raw, 72)
    if not 0 < count <= _MAX_ENTRIES or entry_size < 128 or entry_size & (entry_size - 1):
        return None
    if count * entry_size > _MAX_ARRAY_BYTES:
        return None
    return entry_lba * sector, count, entry_size, array_crc


def declared_architectures(read: Reader, capacity: int) -> frozenset[str]:
    """The architectures the GPT's DPS partitions name; ``read(offset, length) -> bytes``."""
    for sector in (512, 4096):  # the logical sector size is not recorded: try both
        if capacity < 3 * sector:
            continue
        found = _header_at(read, sector)
        if found is None:
            continue
        offset, count, entry_size, array_crc = found
        if offset + count * entry_size > capacity:
            return frozenset()
        array = read(offset, count * entry_size)
        if zlib.crc32(array) != array_crc:
            return frozenset()
        kinds = (
            uuid.UUID(bytes_le=bytes(array[i : i + 16]))
            for i in range(0, count * entry_size, entry_size)
        )
        return frozenset(DPS_ARCHITECTURES[k] for k in kinds if k in DPS_ARCHITECTURES)
    return frozenset()


def image_architectures(path: str | os.PathLike[str]) -> frozenset[str]:
    """What the image at ``path`` declares (see the module docstring); empty when nothing."""
    from manifestkit.images.blocks.open import open_disk

    try:
        disk = open_disk(path)
    except (ManifestkitError, OSError):
        return frozenset()
    try:
        return declared_architectures(disk.read, disk.capacity)
    except (ManifestkitError, OSError, struct.error):
        return frozenset()
    finally:
        disk.close()
