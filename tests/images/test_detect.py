"""Detection by content: every signature, the unsupported formats, names that lie."""

from __future__ import annotations

import shutil
import struct
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from manifestkit.convert import convert_image
from manifestkit.errors import ConversionError, ImageError, NotImportableError
from manifestkit.images import detect, inspect_image

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


@pytest.mark.parametrize(
    ("name", "kind", "family"),
    [
        ("tiny-stream.vmdk", "vmdk-sparse", "VMDK"),
        ("tiny-dynamic.vhd", "vhd", "VHD"),
        ("tiny.raw", "raw", "RAW"),
    ],
)
def test_samples(name: str, kind: str, family: str) -> None:
    found = detect(SAMPLES / name)
    assert (found.kind, found.format) == (kind, family)


@pytest.mark.parametrize(("fmt", "family"), [("qcow2", "QCOW2"), ("vhdx", "VHDX"), ("vdi", "VDI")])
def test_unsupported_formats_named(qemu_img, tmp_path: Path, fmt: str, family: str) -> None:
    path = tmp_path / "disk.img"
    qemu_img("create", "-q", "-f", fmt, str(path), "8M")
    assert qemu_img.info(path)["format"] == fmt
    found = detect(path)
    assert found.format == family and not found.ec2_format
    with pytest.raises(NotImportableError, match="not support") as caught:
        inspect_image(path)
    assert caught.value.exit_code == 2
    assert "qemu-img convert" in str(caught.value)


@pytest.mark.parametrize(("fmt", "family"), [("qed", "QED"), ("parallels", "PARALLELS")])
def test_other_qemu_formats_named(qemu_img, tmp_path: Path, fmt: str, family: str) -> None:
    """Formats qemu-img reads were RAW + importable: EC2 would import their metadata as a disk."""
    path = tmp_path / "disk.img"
    qemu_img("create", "-q", "-f", fmt, str(path), "8M")
    assert qemu_img.info(path)["format"] == fmt
    assert detect(path).format == family
    with pytest.raises(NotImportableError, match="not support") as caught:
        inspect_image(path)
    assert f"qemu-img convert -O vmdk -o subformat=streamOptimized {path}" in str(caught.value)


ARCHIVERS = {  # the real tool makes the file; the fix names the tool that undoes it
    "gzip": (["gzip", "-k"], ".gz", "gunzip -k"),
    "xz": (["xz", "-k", "-0"], ".xz", "xz -dk"),
    "bzip2": (["bzip2", "-k"], ".bz2", "bunzip2 -k"),
    "zstd": (["zstd", "-q"], ".zst", "zstd -d"),
}


@pytest.mark.parametrize("tool", sorted(ARCHIVERS))
def test_compressed_image_is_not_raw(tmp_path: Path, tool: str) -> None:
    """A downloaded disk.vmdk.gz used to be RAW + importable: EC2 would get the compressed bytes."""
    argv, suffix, undo = ARCHIVERS[tool]
    if not shutil.which(argv[0]):
        pytest.skip(f"{argv[0]} not installed")
    disk = tmp_path / "disk.vmdk"
    shutil.copy(SAMPLES / "tiny-stream.vmdk", disk)
    subprocess.run([*argv, str(disk)], check=True)
    packed = tmp_path / f"disk.vmdk{suffix}"
    with pytest.raises(NotImportableError, match="compressed") as caught:
        inspect_image(packed)
    assert f"decompress it first: {undo} {packed}" in str(caught.value)


def test_ova_and_zip_are_not_raw(tmp_path: Path) -> None:
    shutil.copy(SAMPLES / "tiny-stream.vmdk", tmp_path / "disk.vmdk")
    (tmp_path / "vm.ovf").write_text("<Envelope/>")
    ova = tmp_path / "vm.ova"
    with tarfile.open(ova, "w", format=tarfile.USTAR_FORMAT) as tar:  # an OVA is a ustar tar
        tar.add(tmp_path / "vm.ovf", "vm.ovf")
        tar.add(tmp_path / "disk.vmdk", "disk.vmdk")
    with pytest.raises(NotImportableError, match="tar archive") as caught:
        inspect_image(ova)
    assert f"tar xf {ova}" in str(caught.value)
    packed = tmp_path / "disk.zip"
    with zipfile.ZipFile(packed, "w") as z:
        z.write(tmp_path / "disk.vmdk", "disk.vmdk")
    with pytest.raises(NotImportableError, match="zip archive") as caught:
        inspect_image(packed)
    assert f"unzip {packed}" in str(caught.value)


def test_fixed_vhd_detected_by_its_tail(qemu_img, tmp_path: Path) -> None:
    path = tmp_path / "disk.bin"
    qemu_img("create", "-q", "-f", "vpc", "-o", "subformat=fixed", str(path), "2M")
    assert detect(path).format == "VHD"


def test_cowd_is_vmdk_not_importable(tmp_path: Path) -> None:
    # ESX sparse header: magic, version 1, flags 3, numSectors, grainSize, gdOffset, numGDEntries
    path = tmp_path / "delta.vmdk"
    path.write_bytes(struct.pack("<4sIIIIII", b"COWD", 1, 3, 8192, 1, 4, 2).ljust(4096, b"\0"))
    info = inspect_image(path)
    assert (info.format, info.subformat, info.capacity_bytes) == ("VMDK", "vmfsSparse", 8192 * 512)
    assert not info.importable
    # manifestkit convert refuses COWD, so the advice is qemu-img's
    assert any("qemu-img convert" in p for p in info.problems)
    assert not any("manifestkit convert" in p for p in info.problems)
    with pytest.raises(ConversionError, match="cannot convert"):
        convert_image(path, tmp_path / "out.vmdk")


def test_sesparse_is_vmdk_not_importable(tmp_path: Path) -> None:
    path = tmp_path / "se.vmdk"
    path.write_bytes(struct.pack("<QQQQ", 0xCAFEBABE, 0x200000001, 20480, 8).ljust(4096, b"\0"))
    info = inspect_image(path)
    assert (info.format, info.subformat, info.capacity_bytes) == ("VMDK", "seSparse", 20480 * 512)
    assert not info.importable
    assert not any("manifestkit convert" in p for p in info.problems)
    with pytest.raises(ConversionError, match="cannot convert"):
        convert_image(path, tmp_path / "out.vmdk")


def test_sesparse_absurd_capacity(tmp_path: Path) -> None:
    path = tmp_path / "se.vmdk"
    path.write_bytes(struct.pack("<QQQQ", 0xCAFEBABE, 0x200000001, 0, 8).ljust(4096, b"\0"))
    with pytest.raises(ImageError, match="absurd"):
        inspect_image(path)


def test_extension_that_lies_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "disk.vhd"
    path.write_bytes((SAMPLES / "tiny-stream.vmdk").read_bytes())
    info = inspect_image(path)
    assert (info.format, info.subformat) == ("VMDK", "streamOptimized")
    assert info.importable
    assert any("name says VHD" in w for w in info.details["warnings"])


def test_format_option_that_disagrees_is_a_problem() -> None:
    info = inspect_image(SAMPLES / "tiny-dynamic.vhd", format="vmdk")
    assert info.format == "VHD" and not info.importable
    assert any("--format VMDK" in p and "--format VHD" in p for p in info.problems)
    assert inspect_image(SAMPLES / "tiny-dynamic.vhd", format="VHD").importable


def test_format_option_on_file_without_signature_is_an_error() -> None:
    with pytest.raises(ImageError, match="no VMDK header magic"):
        inspect_image(SAMPLES / "tiny.raw", format="VMDK")
    with pytest.raises(ImageError, match="no VHD footer"):
        inspect_image(SAMPLES / "tiny.raw", format="VHD")
    assert inspect_image(SAMPLES / "tiny.raw", format="RAW").importable
