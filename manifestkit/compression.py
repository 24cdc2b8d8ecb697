"""Deflate and inflate zlib streams (VMDK grains) with libdeflate, or the standard library's zlib.

Every compressed VMDK grain is a zlib stream (RFC 1950 around RFC 1951 deflate data). Which
library makes it does not matter to any reader, so the fastest one available is used:

* **libdeflate** (PyPI ``deflate``: abi3 wheels for Linux x86-64/arm64 glibc, macOS x86-64/arm64,
  Windows x86-64; it releases the GIL, so the converter's threads run in parallel). Measured on an
  ext4 image of /usr/lib/python3* and shared libraries (452 MiB of non-zero 64 KiB grains, one
  thread, ``bench/bench_convert.py --levels`` prints the same table for the bench image)::

      zlib 6 (qemu-img)   0.373 of raw   36 MiB/s deflate   384 MiB/s inflate
      zlib 5              0.375          55                 361
      libdeflate 4        0.377         145                 965
      libdeflate 6        0.371         101                 935
      ISA-L (isal) 1/2/3  0.407/0.403/0.398   437/493/249   690-780

  ISA-L is the fastest deflater, but its best ratio is 7 % larger than qemu-img's output on real
  filesystem content, over the 2 % the converter promises; libdeflate level 4 is 2.6x zlib level
  5 and within 1.1 % of qemu-img's size, and inflates 2.5x faster than zlib.
* **zlib** where no libdeflate wheel exists (or ``MANIFESTKIT_DEFLATE=zlib``): the same streams,
  slower. Tests run the converter with both and compare the output with ``qemu-img compare``.
"""

from __future__ import annotations

import os
import zlib
from typing import Literal

Backend = Literal["libdeflate", "zlib"]


class InflateError(ValueError):
    """The data is not one complete zlib stream of at most the allowed size."""


def _choose() -> Backend:
    if os.environ.get("MANIFESTKIT_DEFLATE", "").lower() == "zlib":
        return "zlib"
    try:
        import deflate  # noqa: F401
    except ImportError:
        return "zlib"
    return "libdeflate"


#: the library in use: libdeflate when its wheel is installed, else the standard library
BACKEND: Backend = _choose()


def _backend_id(backend: Backend) -> str:
    if backend == "libdeflate":
        import deflate

        return f"libdeflate-py{getattr(deflate, '__version__', '?')}"
    return f"zlib-{zlib.ZLIB_RUNTIME_VERSION}"


#: names the library build that made the bytes: the same data deflates to the same bytes with the
#: same build and level, which a streamed upload's resume relies on (``convert.streamopt``)
BACKEND_ID = _backend_id(BACKEND)

#: Default level of each backend, each the fastest within 2 % of qemu-img's output (zlib level 6):
#: zlib 5 (+0.5 %) and libdeflate 4 (+1.1 %) on filesystem content (module doc).
DEFAULT_LEVELS: dict[str, int] = {"libdeflate": 4, "zlib": 5}
DEFAULT_LEVEL = DEFAULT_LEVELS[BACKEND]
#: the cheapest level, for probing whether data compresses at all
FAST_LEVEL = 1


def compress(data: bytes, level: int, backend: Backend | None = None) -> bytes:
    """One zlib stream holding ``data``. ``level`` 0 stores (no compression) in both backends."""
    if (backend or BACKEND) == "libdeflate":
        import deflate

        return bytes(deflate.zlib_compress(data, level))
    return zlib.compress(data, level)


def inflate(data: bytes, limit: int, backend: Backend | None = None) -> bytes:
    """The bytes of the zlib stream at the start of ``data`` (bytes after its end are ignored).

    Raises ``InflateError`` when the stream is corrupt, cut short, or inflates to more than
    ``limit`` bytes; the caller checks the exact length it expects.
    """
    if (backend or BACKEND) == "libdeflate":
        import deflate

        try:
            return bytes(deflate.zlib_decompress(data, limit))
        except deflate.DeflateError:
            # libdeflate says only "failed"; zlib tells which, and this is the rare path
            pass
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise InflateError(f"corrupt compressed data ({exc})") from None
    if len(out) > limit:
        raise InflateError(f"inflates to more than {limit} bytes")
    if not inflater.eof:
        raise InflateError("compressed data is cut short (truncated)")
    return out
