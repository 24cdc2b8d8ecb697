"""convert_image on every source qemu-img writes and on the corpus images (qemu-img as oracle)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from manifestkit.convert import convert_image, importable_copy, open_disk
from manifestkit.errors import ConversionError
from manifestkit.images import inspect_image
from manifestkit.images.blocks.disk import ExtentKind

from .helpers import SOURCES, assert_same_disk, needs_qemu, qemu, qemu_make

pytestmark = needs_qemu

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "dfvfs"


def _check_output(source: Path, output: Path, source_format: str | None = None) -> None:
    assert_same_disk(source, output, source_format)
    info = inspect_image(output, deep=True)
    assert info.importable, info.problems
    assert info.subformat == "streamOptimized"
    # capacity: qemu-img's own reading of the source, rounded up to whole sectors
    fmt = ["-f", source_format] if source_format else []
    import json

    virtual = json.loads(qemu("info", *fmt, "--output=json", str(source)).stdout)["virtual-size"]
    assert info.capacity_bytes == -(-virtual // 512) * 512


def test_raw(mixed_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.vmdk"
    info = convert_image(mixed_raw, out, workers=2)
    assert info.path == str(out)
    assert info.file_bytes == out.stat().st_size
    _check_output(mixed_raw, out, "raw")
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(("name", "fmt", "options"), SOURCES, ids=[s[0] for s in SOURCES])
def test_qemu_made_sources(
    mixed_raw: Path, tmp_path: Path, name: str, fmt: str, options: tuple[str, ...]
) -> None:
    source = qemu_make(mixed_raw, tmp_path / f"src.{fmt}", fmt, *options)
    out = tmp_path / "out.vmdk"
    convert_image(source, out)
    _check_output(source, out, fmt)
    # and the result still equals the original RAW
    assert_same_disk(mixed_raw, out, "raw")


def test_streamoptimized_repack_of_our_own_output(mixed_raw: Path, tmp_path: Path) -> None:
    first = tmp_path / "first.vmdk"
    convert_image(mixed_raw, first, workers=1)
    second = tmp_path / "second.vmdk"
    convert_image(first, second, workers=3)
    _check_output(first, second, "vmdk")
    assert_same_disk(mixed_raw, second, "raw")


def test_odd_sized_raw(tmp_path: Path) -> None:
    """A RAW that is not a whole number of sectors: the VMDK rounds up with zeros."""
    source = tmp_path / "odd.img"
    source.write_bytes(b"\x5a" * 70_001)
    out = tmp_path / "odd.vmdk"
    info = convert_image(source, out)
    assert info.capacity_bytes == 70_144
    assert_same_disk(source, out, "raw")


def test_empty_guest_writes_no_grains(tmp_path: Path) -> None:
    source = tmp_path / "zeros.raw"
    with open(source, "wb") as f:
        f.truncate(8 * 1024 * 1024)
        f.write(bytes(1024 * 1024))  # allocated zeros are still left out
    out = tmp_path / "zeros.vmdk"
    info = convert_image(source, out)
    assert info.importable
    assert inspect_image(out, deep=True).details["deep"]["grains"] == 0
    assert_same_disk(source, out, "raw")


def test_holes_are_not_read(mixed_raw: Path) -> None:
    """The RAW source reports its holes (SEEK_HOLE) so the writer never reads them."""
    disk = open_disk(mixed_raw)
    try:
        kinds = {e.kind for e in disk.extents()}
        data = sum(e.length for e in disk.extents() if e.kind is ExtentKind.DATA)
    finally:
        disk.close()
    assert ExtentKind.UNALLOCATED in kinds
    assert data < mixed_raw.stat().st_size


def _gunzip(name: str, tmp_path: Path) -> Path:
    source = CORPUS / name
    if not source.exists():
        pytest.skip(f"{source} is absent")
    target = tmp_path / name.removesuffix(".gz")
    with gzip.open(source, "rb") as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst)
    return target


@pytest.mark.parametrize(("name", "fmt"), [("ext2.vmdk.gz", "vmdk"), ("ext2.vhd.gz", "vpc")])
def test_corpus(tmp_path: Path, name: str, fmt: str) -> None:
    source = _gunzip(name, tmp_path)
    out = tmp_path / "out.vmdk"
    convert_image(source, out)
    _check_output(source, out, fmt)


def test_importable_copy_converts_and_cleans_up(mixed_raw: Path, tmp_path: Path) -> None:
    source = qemu_make(mixed_raw, tmp_path / "disk.vmdk", "vmdk", "subformat=monolithicSparse")
    work = tmp_path / "work"
    work.mkdir()
    with importable_copy(source, workdir=work) as (path, converted):
        assert converted
        assert Path(path).name == "disk.vmdk"  # upload keys use the basename
        assert Path(path).parent.parent == work
        assert inspect_image(path).importable
        assert_same_disk(source, Path(path), "vmdk")
    assert not Path(path).exists()
    assert list(work.iterdir()) == []


def test_importable_copy_passes_importable_image_through(mixed_raw: Path, tmp_path: Path) -> None:
    ready = tmp_path / "ready.vmdk"
    convert_image(mixed_raw, ready)
    with importable_copy(ready, workdir=tmp_path) as (path, converted):
        assert (path, converted) == (str(ready), False)
    assert ready.exists()


def test_importable_copy_lets_errors_of_the_block_through(mixed_raw: Path, tmp_path: Path) -> None:
    ready = tmp_path / "ready.vmdk"
    convert_image(mixed_raw, ready)
    with pytest.raises(ConversionError, match="from the block"):
        with importable_copy(ready, workdir=tmp_path) as (path, converted):
            raise ConversionError("from the block")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ready.vmdk"]
    source = qemu_make(mixed_raw, tmp_path / "disk.vmdk", "vmdk", "subformat=monolithicSparse")
    with pytest.raises(ConversionError, match="from the block"):
        with importable_copy(source, workdir=tmp_path) as (path, converted):
            assert converted
            raise ConversionError("from the block")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.vmdk", "ready.vmdk"]


def test_descriptor_with_flat_zero_and_sparse_extents(mixed_raw: Path, tmp_path: Path) -> None:
    """A hand-written descriptor: FLAT (at a sector offset), ZERO and SPARSE extents in a row; the
    expected disk is the same bytes laid end to end in a RAW."""
    part = mixed_raw.read_bytes()[: 2 * 1024 * 1024]
    (tmp_path / "a-flat.bin").write_bytes(b"\x99" * 1024 + part)  # data from sector 2
    sparse_src = tmp_path / "b.raw"
    sparse_src.write_bytes(part[::-1])
    qemu_make(sparse_src, tmp_path / "b-s001.vmdk", "vmdk", "subformat=monolithicSparse")
    sectors = len(part) // 512
    descriptor = tmp_path / "disk.vmdk"
    descriptor.write_text(
        "# Disk Descriptor File\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="twoGbMaxExtentSparse"\n\n'
        f'RW {sectors} FLAT "a-flat.bin" 2\n'
        f"RW {sectors} ZERO\n"
        f'RW {sectors} SPARSE "b-s001.vmdk"\n'
        '\nddb.adapterType = "ide"\n'
    )
    expected = tmp_path / "expected.raw"
    expected.write_bytes(part + bytes(len(part)) + part[::-1])
    out = tmp_path / "out.vmdk"
    info = convert_image(descriptor, out)
    assert info.capacity_bytes == 3 * len(part)
    # the oracle is the RAW written above: qemu-img 7.2 misreads a ZERO line without a file name
    # (it reuses the previous extent's file as FLAT), so it cannot judge this descriptor
    assert_same_disk(expected, out, "raw")
