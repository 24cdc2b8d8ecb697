"""Turn a local image into one ImportInstance takes: a streamOptimized VMDK (issue 6).

``convert_image`` reads any supported source by content (``images.blocks.open_disk``), a block
device included, and writes a streamOptimized VMDK in one pass (``streamopt``, the same writer
``upload --convert`` streams into parts without a file: ``workflow.stream_upload``).
``importable_copy`` hands back the image itself when it is already importable, or a converted
temporary copy that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator

from manifestkit.convert.output import (
    check_free_space,
    check_not_an_input,
    least_output_bytes,
    partial_file,
    worst_case_output_bytes,
)
from manifestkit.convert.streamopt import DEFAULT_LEVEL, write_stream_optimized
from manifestkit.errors import ConversionError, ImageError, ManifestkitError
from manifestkit.images.blocks.device import check_not_mounted
from manifestkit.images.blocks.open import open_disk
from manifestkit.images.info import ImageInfo
from manifestkit.images.rules import check_import_size
from manifestkit.progress import NoProgress, Progress

__all__ = ["convert_image", "importable_copy", "open_disk"]


def convert_image(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    workers: int | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    level: int = DEFAULT_LEVEL,
    read_mounted: bool = False,
) -> ImageInfo:
    """Convert ``source`` to a streamOptimized VMDK at ``output``; return ``inspect_image(output)``.

    ``source`` may be a block device (a whole disk); one mounted read-write is refused unless
    ``read_mounted``. The output appears under its name only once complete, fsynced and re-read;
    on any error or Ctrl-C nothing is left behind. Raises ``ImageError`` for a bad source,
    ``ConversionError`` for an output that is an input, lack of space or a failed write.
    """
    from manifestkit.images import inspect_image

    source, output = os.fspath(source), os.fspath(output)
    progress = progress or NoProgress()
    check_not_mounted(source, force=read_mounted)
    disk = open_disk(source)
    try:
        if disk.capacity == 0:
            raise ImageError(f"{source}: the disk is empty (0 bytes)", fix="give the disk image")
        check_import_size(source, disk.capacity)
        check_not_an_input(output, (source, *disk.files))
        check_free_space(output, worst_case_output_bytes(disk), least=least_output_bytes(disk))
        with partial_file(output, overwrite=overwrite) as (fd, partial):
            try:
                stats = write_stream_optimized(
                    disk,
                    fd,
                    name=os.path.basename(output),
                    workers=workers,
                    level=level,
                    progress=progress,
                )
            except OSError as exc:
                raise ConversionError(
                    f"{output}: cannot write: {exc.strerror or exc}",
                    fix="free some space or write the output to another disk"
                    if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                    else None,
                ) from exc
            os.fsync(fd)
            written = inspect_image(partial)
            if written.capacity_bytes != stats.capacity_sectors * 512 or not written.importable:
                raise ConversionError(  # a bug, not bad input: say so plainly
                    f"{output}: the written image does not read back as expected "
                    f"({written.subformat}, {written.capacity_bytes} bytes)"
                )
    finally:
        disk.close()
    return inspect_image(output)


@contextlib.contextmanager
def importable_copy(
    path: str | os.PathLike[str],
    *,
    workdir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Iterator[tuple[str, bool]]:
    """Yield ``(path, False)`` when the image imports as it is, else ``(converted, True)``: a
    streamOptimized copy in a temporary folder (``workdir``, default the system temp folder),
    named like the source with ``.vmdk``, removed when the block ends."""
    from manifestkit.images import inspect_image

    path = os.fspath(path)
    try:
        importable = inspect_image(path).importable
    except ManifestkitError:
        # refused as an import (e.g. a qcow2, a damaged header): the converter says whether it
        # can read the data, with its own error
        importable = False
    if importable:
        yield path, False
        return
    folder = tempfile.mkdtemp(prefix="manifestkit-convert-", dir=workdir)
    try:
        stem = os.path.splitext(os.path.basename(path))[0] or "disk"
        target = os.path.join(folder, f"{stem}.vmdk")
        convert_image(path, target, workers=workers, progress=progress)
        yield target, True
    finally:
        shutil.rmtree(folder, ignore_errors=True)
