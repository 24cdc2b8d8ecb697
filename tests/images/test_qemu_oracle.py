"""Compare inspect_image with ``qemu-img info --output=json`` on images qemu-img itself wrote."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from manifestkit.images import inspect_image

MiB = 1024 * 1024
GiB = 1024 * MiB
#: not multiples of a grain (64 KiB) or a MiB; one needs more than one 2 GiB extent
SIZES = [5_000_000, MiB + 512, 3 * 65536 + 1536, 5 * GiB + 1234]
VMDK_SUBFORMATS = [
    "streamOptimized",
    "monolithicSparse",
    "monolithicFlat",
    "twoGbMaxExtentSparse",
    "twoGbMaxExtentFlat",
]
QEMU_FORMAT = {"VMDK": "vmdk", "VHD": "vpc", "RAW": "raw"}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("subformat", VMDK_SUBFORMATS)
def test_vmdk_subformats(qemu_img, tmp_path: Path, subformat: str, size: int) -> None:
    path = tmp_path / "disk.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", str(path), str(size))
    oracle = qemu_img.info(path)
    info = inspect_image(path)
    assert info.format == "VMDK" and QEMU_FORMAT[info.format] == oracle["format"]
    assert info.subformat == oracle["format-specific"]["data"]["create-type"] == subformat
    assert info.capacity_bytes == oracle["virtual-size"]
    assert info.file_bytes == path.stat().st_size
    assert info.importable is (subformat == "streamOptimized")
    if not info.importable:
        assert any(f"manifestkit convert {path} OUT.vmdk" in p for p in info.problems)
    if subformat == "monolithicSparse":
        assert any("compression algorithm 0" in p for p in info.problems)
    if subformat.startswith(("monolithicFlat", "twoGb")):
        extents = oracle["format-specific"]["data"]["extents"]
        assert len(info.details["descriptor"]["extents"]) == len(extents)


def test_stream_with_content_deep(qemu_img, write_raw) -> None:
    src = write_raw(
        "src.raw", 7 * MiB + 4608, {0: b"boot sector" * 40, 5 * MiB + 17: b"\xa5" * 300_000}
    )
    path = src.with_suffix(".vmdk")
    qemu_img("convert", "-q", "-O", "vmdk", "-o", "subformat=streamOptimized", str(src), str(path))
    info = inspect_image(path, deep=True)
    assert info.capacity_bytes == qemu_img.info(path)["virtual-size"] == src.stat().st_size
    deep = info.details["deep"]
    assert deep["checked"] is True
    # independent count of allocated 64 KiB grains in the source
    data = src.read_bytes()
    grains = sum(1 for i in range(0, len(data), 65536) if data[i : i + 65536].strip(b"\0"))
    assert deep["grains"] == grains
    assert info.importable and info.problems == ()


@pytest.mark.parametrize("size", [5_000_000, 10 * MiB + 1536, GiB + 1])
@pytest.mark.parametrize("force_size", ["off", "on"])
@pytest.mark.parametrize("subformat", ["fixed", "dynamic"])
def test_vhd(qemu_img, tmp_path: Path, subformat: str, force_size: str, size: int) -> None:
    path = tmp_path / "disk.vhd"
    opts = f"subformat={subformat},force_size={force_size}"
    qemu_img("create", "-q", "-f", "vpc", "-o", opts, str(path), str(size))
    info = inspect_image(path)
    assert (info.format, info.subformat) == ("VHD", subformat)
    if subformat == "fixed":
        # qemu-img probes only offset 0 for "conectix", so it takes a fixed VHD (footer at the end
        # only) for RAW; we detect it by content, and ask qemu-img to read it as vpc
        assert qemu_img.info(path)["format"] == "raw"
        oracle = qemu_img.info(path, "vpc")
        assert info.capacity_bytes == path.stat().st_size - 512
    else:
        oracle = qemu_img.info(path)
    assert oracle["format"] == "vpc"
    assert info.capacity_bytes == oracle["virtual-size"]
    if force_size == "on":
        assert info.capacity_bytes == -(-size // 512) * 512
    else:  # qemu rounds to a CHS geometry: never smaller than asked
        assert info.capacity_bytes >= size
    assert info.importable


@pytest.mark.parametrize("size", [1, 511, 512, 5_000_001, 3 * MiB])
def test_raw(qemu_img, write_raw, size: int) -> None:
    path = write_raw("disk.raw", size, {0: b"x" * min(size, 100)})
    oracle = qemu_img.info(path)
    info = inspect_image(path)
    assert (info.format, info.subformat) == ("RAW", "raw")
    assert oracle["format"] == "raw"
    assert info.capacity_bytes == info.file_bytes == size
    # qemu-img rounds a RAW file up to whole sectors; the upload (and our capacity) is the file
    assert oracle["virtual-size"] == -(-size // 512) * 512
    if size % 512:
        assert any("512-byte sectors" in w for w in info.details["warnings"])


def test_converting_vhd_to_raw_keeps_capacity(qemu_img, write_raw) -> None:
    """RAW written by qemu-img from a dynamic VHD has exactly the VHD's capacity."""
    src = write_raw("src.raw", 3 * MiB, {MiB: b"data" * 1000})
    vhd = src.with_suffix(".vhd")
    qemu_img("convert", "-q", "-O", "vpc", "-o", "subformat=dynamic", str(src), str(vhd))
    back = src.with_name("back.raw")
    qemu_img("convert", "-q", "-f", "vpc", "-O", "raw", str(vhd), str(back))
    assert inspect_image(vhd).capacity_bytes == back.stat().st_size
    assert (
        hashlib.sha256(back.read_bytes()[: 3 * MiB]).digest()
        == hashlib.sha256(src.read_bytes()).digest()
    )


@pytest.mark.parametrize("subformat", ["streamOptimized", "monolithicSparse"])
def test_over_16_tib_is_not_importable(qemu_img, tmp_path: Path, subformat: str) -> None:
    """qemu-img writes a sparse 17 TiB VMDK in milliseconds; reading it stays within 1 MiB."""
    path = tmp_path / "huge.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", str(path), "17T")
    try:
        info = inspect_image(path)
        assert info.capacity_bytes == qemu_img.info(path)["virtual-size"] == 17 * 1024**4
        assert not info.importable
        assert any("under 16 TiB" in p for p in info.problems)
        assert info.details["bytes_read"] <= MiB
    finally:
        path.unlink()


@pytest.mark.parametrize(
    "subformat", ["monolithicSparse", "streamOptimized", "twoGbMaxExtentSparse"]
)
def test_snapshot_advice_is_one_that_works(qemu_img, tmp_path: Path, subformat: str) -> None:
    """A snapshot is reported as one, naming its parent, and the advice is qemu-img (which reads
    the chain), not ``manifestkit convert`` (which refuses snapshots)."""
    from manifestkit.convert import convert_image
    from manifestkit.errors import ConversionError

    base = tmp_path / "base.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", str(base), "4M")
    delta = tmp_path / "base-000001.vmdk"
    qemu_img(
        "create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}",
        "-b", base.name, "-F", "vmdk", str(delta),
    )  # fmt: skip
    oracle = qemu_img.info(delta)
    assert oracle["backing-filename"] == base.name
    info = inspect_image(delta)
    assert not info.importable
    (problem,) = info.problems
    assert "snapshot" in problem and base.name in problem
    assert f"qemu-img convert -O vmdk -o subformat=streamOptimized {delta}" in problem
    assert "manifestkit convert" not in problem
    with pytest.raises(ConversionError, match="snapshot"):
        convert_image(delta, tmp_path / "out.vmdk")
    qemu_img(  # the advice works: the chain becomes one importable disk
        "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", str(delta),
        str(tmp_path / "merged.vmdk"),
    )  # fmt: skip
    assert inspect_image(tmp_path / "merged.vmdk").importable


@pytest.mark.parametrize("subformat", ["monolithicFlat", "twoGbMaxExtentSparse"])
def test_descriptor_without_its_extents_says_so(qemu_img, tmp_path: Path, subformat: str) -> None:
    """Copying only the small descriptor .vmdk is a common slip: say which file is missing before
    advising a convert that would fail on it."""
    from manifestkit.convert import convert_image
    from manifestkit.errors import ImageError

    path = tmp_path / "disk.vmdk"
    qemu_img("create", "-q", "-f", "vmdk", "-o", f"subformat={subformat}", str(path), "4M")
    (extent,) = [p for p in tmp_path.iterdir() if p != path]
    extent.unlink()
    info = inspect_image(path)
    assert not info.importable
    (problem,) = info.problems
    assert f"{extent.name} is missing" in problem and "copy every file" in problem
    with pytest.raises(ImageError, match="missing"):
        convert_image(path, tmp_path / "out.vmdk")
