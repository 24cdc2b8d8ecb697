"""The deflate backend (libdeflate, or the standard library's zlib as the fallback)."""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from manifestkit import compression
from manifestkit.compression import InflateError, compress, inflate
from manifestkit.convert import convert_image
from manifestkit.images import inspect_image

from .helpers import assert_same_disk, needs_qemu

BACKENDS = ["zlib", "libdeflate"] if compression.BACKEND == "libdeflate" else ["zlib"]
TEXT = b"".join(b"line %d of a log file: kernel usr lib\n" % i for i in range(2000))[:65536]


@pytest.mark.parametrize("backend", BACKENDS)
def test_streams_are_plain_zlib(backend):
    for level in (0, 1, compression.DEFAULT_LEVELS[backend]):
        packed = compress(TEXT, level, backend)
        assert zlib.decompress(packed) == TEXT  # any reader (qemu, VMware, AWS) inflates it
        assert inflate(packed, len(TEXT), backend) == TEXT
    assert len(compress(TEXT, 0, backend)) > len(TEXT)  # level 0 stores
    assert inflate(zlib.compress(TEXT) + b"trailing", 65536, backend) == TEXT


@pytest.mark.parametrize("backend", BACKENDS)
def test_inflate_refuses_bad_streams(backend):
    packed = zlib.compress(TEXT)
    with pytest.raises(InflateError, match="more than 1000"):
        inflate(packed, 1000, backend)
    with pytest.raises(InflateError, match="cut short"):
        inflate(packed[: len(packed) // 2], 65536, backend)
    with pytest.raises(InflateError, match="corrupt"):
        inflate(b"\x78\x9c\xff\xff\xff" + packed[5:], 65536, backend)


def test_environment_forces_the_fallback():
    code = "from manifestkit import compression; print(compression.BACKEND)"
    env = dict(os.environ, MANIFESTKIT_DEFLATE="zlib")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "zlib", out.stderr


@needs_qemu
@pytest.mark.parametrize("backend", BACKENDS)
def test_convert_with_each_backend_is_identical_by_qemu(
    backend, mixed_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback (zlib) and libdeflate both write a disk qemu-img finds identical to the source,
    and ``inspect --deep`` inflates every grain of it with the same backend."""
    monkeypatch.setattr(compression, "BACKEND", backend)
    out = tmp_path / f"{backend}.vmdk"
    convert_image(mixed_raw, out, level=compression.DEFAULT_LEVELS[backend])
    assert_same_disk(mixed_raw, out, "raw")
    info = inspect_image(out, deep=True)
    assert info.importable, info.problems
