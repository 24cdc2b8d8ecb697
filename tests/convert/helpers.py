"""Helpers for the converter tests: a RAW with mixed content, qemu-img to make and check images."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

QEMU_IMG = shutil.which("qemu-img")
needs_qemu = pytest.mark.skipif(QEMU_IMG is None, reason="qemu-img is not installed")

#: 6 MiB + 3.5 KiB: not a multiple of a grain (64 KiB) nor of a MiB, but whole sectors
RAW_BYTES = 6 * 1024 * 1024 + 7 * 512


def write_mixed_raw(path: Path, size: int = RAW_BYTES, seed: int = 6) -> None:
    """Zero runs, random (incompressible) data, text-like data, a few isolated non-zero bytes, data
    at the very end; holes left sparse so readers can skip them."""
    rng = random.Random(seed)
    words = [b"kernel", b"usr", b"lib", b"firmware", b"0x7f3a", b"init", b"\n", b" ", b"etc/"]
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(0)
        f.write(os.urandom(150_000))  # random, spans grains 0-2
        f.seek(1024 * 1024 + 100)
        f.write(b"".join(rng.choice(words) for _ in range(120_000)))  # compressible text
        f.seek(3 * 1024 * 1024)
        f.write(bytes(256 * 1024))  # written zeros: allocated but all-zero grains
        f.seek(3 * 1024 * 1024 + 300 * 1024)
        f.write(b"\x01")  # one byte in an otherwise zero grain
        f.seek(5 * 1024 * 1024 - 10)
        f.write(os.urandom(20))  # straddles a grain boundary
        f.seek(size - 1000)
        f.write(os.urandom(1000))  # the partial last grain


def qemu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([QEMU_IMG, *args], capture_output=True, text=True, check=False)


def qemu_make(raw: Path, out: Path, fmt: str, *options: str) -> Path:
    cmd = ["convert", "-f", "raw", "-O", fmt]
    for option in options:
        cmd += ["-o", option]
    result = qemu(*cmd, str(raw), str(out))
    assert result.returncode == 0, result.stderr
    return out


#: (id, qemu-img -O format, options); each subformat qemu-img writes
SOURCES = [
    ("vmdk-monolithicSparse", "vmdk", ("subformat=monolithicSparse",)),
    ("vmdk-monolithicFlat", "vmdk", ("subformat=monolithicFlat",)),
    ("vmdk-twoGbMaxExtentSparse", "vmdk", ("subformat=twoGbMaxExtentSparse",)),
    ("vmdk-twoGbMaxExtentFlat", "vmdk", ("subformat=twoGbMaxExtentFlat",)),
    ("vmdk-streamOptimized", "vmdk", ("subformat=streamOptimized",)),
    ("vpc-fixed", "vpc", ("subformat=fixed", "force_size=on")),
    ("vpc-dynamic", "vpc", ("subformat=dynamic", "force_size=on")),
]


def assert_same_disk(source: Path, output: Path, source_format: str | None = None) -> None:
    """qemu-img compare (exit 0: same guest data) and qemu-img check (no errors) as oracles.
    Fixed VHDs have no leading magic, so qemu-img needs ``-f vpc`` to read them as VHD."""
    fmt = ("-f", source_format) if source_format else ()
    compare = qemu("compare", *fmt, "-F", "vmdk", str(source), str(output))
    assert compare.returncode == 0, compare.stdout + compare.stderr
    check = qemu("check", str(output))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "No errors" in check.stdout
