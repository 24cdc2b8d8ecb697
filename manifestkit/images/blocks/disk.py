"""What every source reader offers the writer: a virtual disk with a map of where its data is.

A reader describes the guest's view of the disk (``capacity`` bytes) as a sorted, gap-free run of
extents, each ``data`` (read it), ``zero`` (known zeros, e.g. a VMDK zeroed-grain entry or a ZERO
extent) or ``unallocated`` (never written: reads as zeros). The writer reads only ``data`` extents,
so holes cost nothing whatever the disk size.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from manifestkit.errors import ImageError

SECTOR = 512


class ExtentKind(enum.Enum):
    DATA = "data"
    ZERO = "zero"
    UNALLOCATED = "unallocated"


@dataclass(frozen=True)
class Extent:
    offset: int
    length: int
    kind: ExtentKind

    @property
    def end(self) -> int:
        return self.offset + self.length


class VirtualDisk(Protocol):
    """A source image opened for reading. ``read`` must be safe to call from several threads."""

    #: the virtual disk size in bytes
    capacity: int
    #: every file this disk reads (the image and its extent files), for same-file checks
    files: tuple[str, ...]

    def extents(self) -> Iterator[Extent]:
        """Sorted extents covering ``[0, capacity)`` without gaps; neighbours may share a kind."""
        ...

    def read(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes of guest data at ``offset`` (holes read as zeros)."""
        ...

    def close(self) -> None: ...


def coalesce(extents: Iterable[Extent]) -> Iterator[Extent]:
    """Merge neighbouring extents of the same kind, so a sparse map stays short."""
    pending: Extent | None = None
    for extent in extents:
        if extent.length <= 0:
            continue
        if pending is not None and pending.kind is extent.kind and pending.end == extent.offset:
            pending = Extent(pending.offset, pending.length + extent.length, pending.kind)
            continue
        if pending is not None:
            yield pending
        pending = extent
    if pending is not None:
        yield pending


def pread_exact(fd: int, length: int, offset: int, path: str, what: str) -> bytes:
    """``length`` bytes at ``offset``, or an ImageError naming the file (short read: truncated)."""
    chunks: list[bytes] = []
    got = 0
    while got < length:
        try:
            chunk = os.pread(fd, length - got, offset + got)
        except OSError as exc:
            raise ImageError(
                f"{path}: cannot read {what} at byte {offset + got}: {exc.strerror}"
            ) from exc
        if not chunk:
            raise ImageError(
                f"{path}: {what} at byte {offset} runs past the end of the file "
                f"({length} bytes wanted, {got} there); the image is truncated or corrupt"
            )
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def file_size(fd: int) -> int:
    """The size of an open file, or of an open block device (``stat`` says 0 for those)."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        return os.lseek(fd, 0, os.SEEK_END)
    return st.st_size


def open_readonly(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ImageError(f"{path}: no such file", fix="check the path") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"{path}: is a directory, not a disk image") from exc
    except PermissionError as exc:
        raise ImageError(f"{path}: permission denied", fix="make the file readable") from exc
    except OSError as exc:
        raise ImageError(f"{path}: cannot open: {exc.strerror}") from exc


class OneFileDisk:
    """A source read from one open file: the shared opening, reading and closing.

    ``__init__`` opens ``path`` read-only and runs ``_open`` (the subclass's header checks); if
    that fails, the descriptor is closed before the error leaves, so a bad image leaks nothing.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.files: tuple[str, ...] = (path,)
        self._fd = open_readonly(path)
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        """Read and check what the disk needs before ``extents``/``read`` (headers, tables)."""

    def _pread(self, offset: int, length: int, what: str) -> bytes:
        return pread_exact(self._fd, length, offset, self.path, what)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
