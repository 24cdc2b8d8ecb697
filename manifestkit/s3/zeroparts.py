"""Finding parts that are all zeros, without reading them when the file system can say so.

A sparse RAW image of a mostly empty disk is mostly holes. ``lseek(SEEK_DATA)`` (Linux >= 3.1,
the BSDs, macOS; POSIX.1-2024) answers "where does the next data start" from the file system's
extent map: if the next data after ``start`` lies beyond ``end`` (or there is none, ``ENXIO``), the
whole range is a hole and reads as zeros. Where it is not supported (``EINVAL``, old kernels, some
network file systems) or the range has data, the caller reads the bytes and compares them.

``ZeroBlocks`` keeps one zero buffer and its MD5 per part size (at most two sizes: the part size
and the shorter last part): comparing a buffer with it is a ``memcmp``, and the MD5 is the ETag
S3 gives a zero object of that size.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading

#: lseek whence values; absent on platforms without sparse-file support
_SEEK_DATA = getattr(os, "SEEK_DATA", None)


def range_is_hole(fd: int, start: int, end: int) -> bool | None:
    """True when ``[start, end]`` (inclusive) is entirely a hole; False when it has data;
    None when the file system cannot say (then read and compare)."""
    if _SEEK_DATA is None:
        return None
    try:
        data = os.lseek(fd, start, _SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return True  # no data at or after ``start``: the rest of the file is a hole
        return None  # EINVAL / EOPNOTSUPP: not supported here
    return data > end


class ZeroBlocks:
    """Zero buffers and their MD5s, one per size, created on first use (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[int, tuple[bytes, bytes]] = {}

    def _entry(self, size: int) -> tuple[bytes, bytes]:
        with self._lock:
            entry = self._blocks.get(size)
            if entry is None:
                block = bytes(size)
                entry = (block, hashlib.md5(block).digest())
                self._blocks[size] = entry
            return entry

    def block(self, size: int) -> bytes:
        return self._entry(size)[0]

    def md5(self, size: int) -> bytes:
        return self._entry(size)[1]

    def is_zero(self, data: bytes) -> bool:
        return data == self._entry(len(data))[0]
