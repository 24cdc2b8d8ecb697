"""Local disk images: detect the format by content, read VMDK / VHD / RAW, judge importability.

Public API (stable; the converter and the import commands use it):
``inspect_image``, ``detect``, ``Detected``, ``ImageInfo``, ``ImageError``; the pure parsers live in
``manifestkit.images.vmdk`` and ``manifestkit.images.vhd``, the import rules in ``.rules``.
"""

from manifestkit.errors import ImageError, NotImportableError
from manifestkit.images.detect import Detected, detect
from manifestkit.images.info import ImageInfo
from manifestkit.images.inspect import inspect_image

__all__ = [
    "Detected",
    "ImageError",
    "ImageInfo",
    "NotImportableError",
    "detect",
    "inspect_image",
]
