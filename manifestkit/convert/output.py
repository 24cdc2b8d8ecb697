"""Guards around the output file: not one of the inputs, enough free space, and never a half-written
file under the final name (written to a ``.partial`` name, fsynced, renamed when complete)."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence

from manifestkit.convert.streamopt import GRAIN_BYTES, GT_SPAN
from manifestkit.errors import ConversionError
from manifestkit.images.blocks.disk import SECTOR, ExtentKind, VirtualDisk

log = logging.getLogger("manifestkit")


def check_not_an_input(output: str, inputs: Sequence[str]) -> None:
    """Refuse to write over the source or one of its extent files (same path, symlink, hardlink)."""
    out_real = os.path.realpath(output)
    try:
        out_stat: os.stat_result | None = os.stat(output)
    except OSError:
        out_stat = None
    for path in inputs:
        same = os.path.realpath(path) == out_real
        if not same and out_stat is not None:
            try:
                st = os.stat(path)
            except OSError:
                continue
            same = (st.st_dev, st.st_ino) == (out_stat.st_dev, out_stat.st_ino)
        if same:
            raise ConversionError(
                f"{output}: is the image being converted ({path})",
                fix="choose another output file name",
            )


def worst_case_output_bytes(disk: VirtualDisk) -> int:
    """An upper bound on the streamOptimized size: every grain touching data stored uncompressed
    (deflate can grow random data by a few bytes; a marker and padding add at most one sector),
    plus one grain table per 32 MiB of data, the directory and the header/footer sectors."""
    grains = 0
    last_grain = -1
    for extent in disk.extents():
        if extent.kind is not ExtentKind.DATA:
            continue
        first = max(extent.offset // GRAIN_BYTES, last_grain + 1)
        last = (extent.end - 1) // GRAIN_BYTES
        if last >= first:
            grains += last - first + 1
            last_grain = last
    per_grain = GRAIN_BYTES + GRAIN_BYTES // 1000 + 2 * SECTOR
    tables = -(-disk.capacity // GT_SPAN)
    return grains * per_grain + tables * 5 * SECTOR + 64 * 1024


def least_output_bytes(disk: VirtualDisk) -> int:
    """The output of an all-zero disk: header, descriptor, the directory, footer (no grains)."""
    tables = -(-disk.capacity // GT_SPAN)
    return -(-4 * tables // SECTOR) * SECTOR + 64 * 1024


def check_free_space(output: str, needed: int, *, least: int = 0) -> None:
    """Refuse when not even ``least`` bytes fit; only warn when the worst case ``needed`` does not.

    The worst case counts every allocated grain as incompressible, but a disk copied block by
    block (dd) is all allocated and mostly zeros, which cost nothing: refusing on it would block
    conversions that fit, with no way round. A disk that fills up mid-way still leaves nothing
    behind (``partial_file``) and says so.
    """
    folder = os.path.dirname(os.path.abspath(output))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise ConversionError(f"{output}: {folder} is not a folder", fix="choose another path")
    if not os.path.isdir(folder):
        raise ConversionError(
            f"{output}: the folder {folder} does not exist", fix="create it or choose another path"
        )
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise ConversionError(f"{folder}: cannot check free space: {exc.strerror}") from exc
    if free < least:
        raise ConversionError(
            f"{output}: not enough free space in {folder}: the converted image needs at least "
            f"{least} bytes and {free} are free",
            fix="free some space or write the output to another disk",
        )
    if free < needed:
        log.warning(
            "%s: the converted image may need up to %d bytes and %d are free in %s; converting "
            "anyway (zeros cost nothing; if the disk fills up, nothing is left behind)",
            output,
            needed,
            free,
            folder,
        )


@contextlib.contextmanager
def partial_file(output: str, *, overwrite: bool) -> Iterator[tuple[int, str]]:
    """Yield ``(fd, partial_path)`` for a fresh file next to ``output``; on success fsync it,
    rename it to ``output`` and fsync the folder; on any error or Ctrl-C remove it."""
    if os.path.isdir(output):
        raise ConversionError(
            f"{output}: is a folder",
            fix=f"give the output file's name, e.g. {os.path.join(output, 'disk.vmdk')}",
        )
    if os.path.exists(output) and not os.path.isfile(output):
        # the rename below would replace a device or pipe node itself (as root: /dev/full)
        raise ConversionError(
            f"{output}: is not a regular file", fix="give the path of a .vmdk file to write"
        )
    if os.path.lexists(output) and not overwrite:
        raise ConversionError(f"{output}: already exists", fix="remove it or pass --force")
    folder = os.path.dirname(os.path.abspath(output))
    partial = f"{output}.{secrets.token_hex(4)}.partial"
    try:
        fd = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666
        )
    except OSError as exc:
        raise ConversionError(f"{output}: cannot create {partial}: {exc.strerror}") from exc
    try:
        try:
            yield fd, partial
            os.fsync(fd)
        finally:
            os.close(fd)
        if os.path.lexists(output) and not overwrite:  # appeared while we were converting
            raise ConversionError(f"{output}: already exists", fix="remove it or pass --force")
        try:
            os.replace(partial, output)
        except OSError as exc:
            raise ConversionError(
                f"{output}: cannot put the converted image in place: {exc.strerror or exc}"
            ) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
