"""Open any supported image as a ``VirtualDisk``, chosen by content (``images.detect``)."""

from __future__ import annotations

import os
import shlex

from manifestkit.errors import ConversionError
from manifestkit.images.blocks.disk import VirtualDisk
from manifestkit.images.detect import (
    ARCHIVE_FIXES,
    RAW,
    VHD,
    VMDK_DESCRIPTOR,
    VMDK_SPARSE,
    detect,
)


def open_disk(path: str | os.PathLike[str]) -> VirtualDisk:
    """The guest data of the image at ``path``: RAW, VMDK (sparse, streamOptimized, descriptor with
    FLAT/SPARSE/ZERO extents) or VHD (fixed, dynamic); ``ImageError``/``ConversionError`` if not.
    """
    path = os.fspath(path)
    found = detect(path)
    if found.kind == RAW:
        from manifestkit.images.blocks.raw import FileRegion

        return FileRegion(path)
    if found.kind == VMDK_SPARSE:
        from manifestkit.images.blocks.vmdk_sparse import SparseExtentDisk

        return SparseExtentDisk(path)
    if found.kind == VMDK_DESCRIPTOR:
        from manifestkit.images.blocks.vmdk_descriptor import DescriptorDisk

        return DescriptorDisk(path)
    if found.kind == VHD:
        from manifestkit.images.blocks.vhd import open_vhd

        return open_vhd(path)
    if found.kind in ARCHIVE_FIXES:
        raise ConversionError(
            f"{path}: is a {found.name}, not a disk image",
            fix=f"{ARCHIVE_FIXES[found.kind]} {shlex.quote(path)}",
        )
    raise ConversionError(
        f"{path}: is a {found.name} image, which manifestkit cannot convert",
        fix="convert it with: qemu-img convert -O vmdk -o subformat=streamOptimized "
        f"{path} OUTPUT.vmdk",
    )
