"""The architecture an image declares: GPT partition types of the Discoverable Partitions
Specification, as systemd-repart (the oracle) writes them; anything else declares nothing."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from manifestkit.images.architecture import image_architectures
from tests.ami.conftest import bucket_keys, tasks_for_bucket

REPART = shutil.which("systemd-repart")
needs_repart = pytest.mark.skipif(
    REPART is None, reason="systemd-repart (the oracle) not installed"
)


def repart_image(folder: Path, *types: str, size: str = "4M") -> Path:
    """A disk image whose GPT systemd-repart wrote, one 1 MiB partition per DPS type name."""
    definitions = folder / "definitions"
    definitions.mkdir()
    for index, kind in enumerate(types):
        (definitions / f"{index:02d}.conf").write_text(
            f"[Partition]\nType={kind}\nSizeMinBytes=1M\nSizeMaxBytes=1M\n"
        )
    image = folder / "disk.raw"
    subprocess.run(
        [REPART or "systemd-repart", "--empty=create", f"--size={size}",
         f"--definitions={definitions}", "--dry-run=no", str(image)],
        check=True, capture_output=True,
    )  # fmt: skip
    return image


@needs_repart
@pytest.mark.parametrize(
    ("types", "declared"),
    [
        (("esp", "root-arm64"), {"arm64"}),
        (("esp", "root-x86-64", "usr-x86-64"), {"x86_64"}),
        (("usr-x86",), {"i386"}),
        (("root-riscv64",), {"riscv64"}),
        (("esp", "linux-generic", "swap"), set()),
    ],
)
def test_declared_by_dps_partition_types(
    types: tuple[str, ...], declared: set[str], tmp_path: Path
) -> None:
    assert image_architectures(repart_image(tmp_path, *types)) == declared


@needs_repart
@pytest.mark.parametrize("subformat", ["streamOptimized VMDK", "dynamic VHD"])
def test_read_through_the_virtual_disk(subformat: str, tmp_path: Path) -> None:
    raw = repart_image(tmp_path, "root-arm64")
    target = tmp_path / "disk.out"
    options = (
        ["-O", "vmdk", "-o", "subformat=streamOptimized"]
        if subformat.endswith("VMDK")
        else ["-O", "vpc", "-o", "subformat=dynamic"]
    )
    subprocess.run(["qemu-img", "convert", "-f", "raw", *options, str(raw), str(target)],
                   check=True, capture_output=True)  # fmt: skip
    assert image_architectures(target) == {"arm64"}


@needs_repart
def test_a_table_whose_crc_does_not_match_declares_nothing(tmp_path: Path) -> None:
    image = repart_image(tmp_path, "root-arm64")
    data = bytearray(image.read_bytes())
    entries = int.from_bytes(data[512 + 72 : 512 + 80], "little") * 512
    data[entries] ^= 0xFF  # the first entry's type GUID; the array CRC no longer matches
    image.write_bytes(bytes(data))
    assert image_architectures(image) == set()
    # and a header CRC that does not match, with the entry array intact again
    data[entries] ^= 0xFF
    data[512 + 16] ^= 0xFF
    image.write_bytes(bytes(data))
    assert image_architectures(image) == set()
    data[512 + 16] ^= 0xFF
    assert zlib.crc32(
        bytes(data[512 : 512 + 16]) + b"\0" * 4 + bytes(data[532:604])
    ) == int.from_bytes(data[528:532], "little")


def test_no_gpt_declares_nothing(tmp_path: Path) -> None:
    image = tmp_path / "mbr.raw"
    image.write_bytes(b"\0" * 510 + b"\x55\xaa" + b"\0" * 65536)
    assert image_architectures(image) == set()
    assert image_architectures(tmp_path / "missing") == set()


@needs_repart
def test_import_ami_refuses_an_architecture_the_image_says_it_is_not(
    ami: Any, tmp_path: Path, name: str, ec2: Any, s3: Any, bucket: str
) -> None:
    image = repart_image(tmp_path, "esp", "root-arm64")
    code, _, err = ami(image, name)  # default --architecture x86_64
    assert code == 2
    (line,) = [x for x in err.splitlines() if x.startswith("manifestkit: error:")]
    assert "declares arm64 (Discoverable Partitions Specification" in line and "not x86_64" in line
    assert "pass --architecture arm64" in line
    assert bucket_keys(s3, bucket) == [] and tasks_for_bucket(ec2, bucket) == []
    code, result, err = ami(image, name, "--architecture", "arm64")
    assert code == 0, err
    assert (
        ec2.describe_images(ImageIds=[result["image_id"]])["Images"][0]["Architecture"] == "arm64"
    )
