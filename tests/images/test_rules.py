"""Import rules: each limit and each non-importable kind says what is wrong and what to do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from manifestkit.errors import ImageError
from manifestkit.images import ImageInfo, inspect_image
from manifestkit.images.rules import judge

GiB = 1024**3
TiB = 1024 * GiB


def info(fmt: str, subformat: str, capacity: int, **details: object) -> ImageInfo:
    base = {"VMDK": {"kind": "vmdk-sparse", "compress_algorithm": 1, "markers": True}}
    return ImageInfo(
        path="d.img",
        format=fmt,
        subformat=subformat,
        file_bytes=1000,
        capacity_bytes=capacity,
        importable=True,
        details={**base.get(fmt, {}), **details},
    )


@pytest.mark.parametrize(
    ("image", "importable", "words"),
    [
        (info("VMDK", "streamOptimized", 16 * TiB - 512), True, None),
        (info("VMDK", "streamOptimized", 16 * TiB), False, "16 TiB"),
        (info("RAW", "raw", 17 * TiB), False, "16 TiB"),
        (info("VHD", "dynamic", 2040 * GiB), True, None),
        (info("VHD", "dynamic", 2040 * GiB + 512), False, "2040 GiB"),
        (info("VHD", "fixed", 2041 * GiB), False, "manifestkit convert d.img OUT.vmdk"),
        (info("VHD", "differencing", GiB, parent_name="p.vhd"), False, "p.vhd"),
        (info("VMDK", "monolithicSparse", GiB, compress_algorithm=0), False, "algorithm 0"),
        (info("VMDK", "streamOptimized", GiB, compress_algorithm=0), False, "algorithm 0"),
        (info("VMDK", "vmfs", GiB, kind="vmdk-descriptor"), False, "descriptor"),
        (info("VMDK", "sparseExtent", GiB), False, "DESCRIPTOR.vmdk"),
        (info("VMDK", "streamOptimized", GiB, format_given="VHD"), False, "--format VMDK"),
    ],
)
def test_rules(image: ImageInfo, importable: bool, words: str | None) -> None:
    judged = judge(image)
    assert judged.importable is importable
    if words:
        assert any(words in p for p in judged.problems)
    else:
        assert judged.problems == ()


def test_zero_length_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.raw"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        inspect_image(path)


def test_one_tib_sparse_raw_reads_little(tmp_path: Path) -> None:
    path = tmp_path / "big.raw"
    with open(path, "wb") as f:
        f.truncate(TiB)
    try:
        image = inspect_image(path)
        assert image.capacity_bytes == TiB and image.volume_gib == 1024 and image.importable
        assert image.details["bytes_read"] <= 1024 * 1024
    finally:
        os.unlink(path)
