"""Open an image safely and read it by offset, counting every byte read.

Why a wrapper and not a bare file object: the checks must never hang (a FIFO or a device would block
or lie about its size), every short read must become a one-line ``ImageError`` naming the file, and
the benchmark proves the "at most ~1 MiB without --deep" promise from ``bytes_read``.
"""

from __future__ import annotations

import os
import stat
from types import TracebackType
from typing import BinaryIO

from manifestkit.errors import ImageError

#: the fix for an image that ends before its own structures say it should
FIX_TRUNCATED = "the file is incomplete; copy it again"


def _nonblocking(path: str, flags: int) -> int:
    # O_NONBLOCK: if the path was swapped for a FIFO after the stat check, open() does not block.
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def stat_regular(path: str, *, allow_block: bool = False) -> os.stat_result:
    """``os.stat`` the path and insist on a regular file (or, with ``allow_block``, a block
    device: a whole disk), before anything opens it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file", fix="check the path") from None
    except PermissionError:
        raise ImageError(f"{path}: permission denied", fix="make the file readable") from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot stat: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(f"{path}: is a directory", fix="give the image file, not its folder")
    if allow_block and stat.S_ISBLK(st.st_mode):
        return st
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "not a regular file"
        raise ImageError(f"{path}: is {kind}", fix="copy the image into a regular file first")
    return st


class ImageReader:
    """A read-only image file: ``read_at(offset, n)`` gives exactly n bytes or ``ImageError``.

    A block device (a whole disk) is read too: it cannot block like a FIFO, and its size is its
    capacity (``os.stat`` says 0 for a device). FIFOs and character devices stay refused.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        stat_regular(self.path, allow_block=True)
        try:
            self._file: BinaryIO = open(self.path, "rb", buffering=0, opener=_nonblocking)  # noqa: SIM115
        except FileNotFoundError:
            raise ImageError(f"{self.path}: no such file", fix="check the path") from None
        except PermissionError:
            raise ImageError(
                f"{self.path}: permission denied", fix="make the file readable (chmod u+r)"
            ) from None
        except OSError as exc:
            raise ImageError(f"{self.path}: cannot open: {exc.strerror or exc}") from None
        st = os.fstat(self._file.fileno())
        self.is_device = stat.S_ISBLK(st.st_mode)
        if not stat.S_ISREG(st.st_mode) and not self.is_device:  # swapped between stat and open
            self._file.close()
            raise ImageError(f"{self.path}: is not a regular file")
        self.size = st.st_size
        if self.is_device:
            try:
                self.size = os.lseek(self._file.fileno(), 0, os.SEEK_END)
            except OSError as exc:
                self._file.close()
                raise ImageError(f"{self.path}: cannot find the device's size: {exc}") from None
        self.bytes_read = 0

    def read_at(self, offset: int, n: int, *, what: str = "data") -> bytes:
        """Read exactly ``n`` bytes at ``offset``; a file that ends first is truncated."""
        if offset < 0 or n < 0 or offset + n > self.size:
            raise ImageError(
                f"{self.path}: truncated: {what} needs bytes {offset}..{offset + n - 1} "
                f"but the file has {self.size} bytes",
                fix="the file is incomplete or damaged; copy it again",
            )
        chunks = []
        remaining = n
        pos = offset
        while remaining:
            chunk = self.pread(pos, remaining)
            if not chunk:
                raise ImageError(
                    f"{self.path}: truncated while reading {what} at byte {pos}",
                    fix="the file shrank or is damaged; copy it again",
                )
            chunks.append(chunk)
            remaining -= len(chunk)
            pos += len(chunk)
        return b"".join(chunks)

    def pread(self, offset: int, n: int) -> bytes:
        """One read of at most ``n`` bytes at ``offset`` (shorter at end of file)."""
        try:
            self._file.seek(offset)
            chunk = self._file.read(n) or b""
        except OSError as exc:
            raise ImageError(
                f"{self.path}: read error at byte {offset}: {exc.strerror or exc}"
            ) from None
        self.bytes_read += len(chunk)
        return chunk

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> ImageReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
