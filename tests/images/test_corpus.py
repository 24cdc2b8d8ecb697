"""Real images made by other tools (../shared/corpus, see its README); skipped when absent."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from manifestkit.convert import convert_image
from manifestkit.errors import ConversionError, ImageError
from manifestkit.images import inspect_image

#: ../shared/corpus from the project root (/work/main -> /work/shared/corpus)
DFVFS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "dfvfs"
pytestmark = pytest.mark.skipif(not DFVFS.is_dir(), reason=f"corpus folder {DFVFS} is absent")


def unpack(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    out.write_bytes(gzip.decompress((DFVFS / f"{name}.gz").read_bytes()))
    return out


@pytest.mark.parametrize(
    ("name", "fmt", "subformat", "importable"),
    [
        ("ext2.vmdk", "VMDK", "monolithicSparse", False),
        ("ext2.vhd", "VHD", "dynamic", True),
        ("fat-differential.vhd", "VHD", "differencing", False),
    ],
)
def test_agrees_with_qemu_img(
    qemu_img, tmp_path: Path, name: str, fmt: str, subformat: str, importable: bool
) -> None:
    path = unpack(name, tmp_path)
    oracle = qemu_img.info(path)
    info = inspect_image(path)
    assert (info.format, info.subformat) == (fmt, subformat)
    assert {"VMDK": "vmdk", "VHD": "vpc"}[fmt] == oracle["format"]
    assert info.capacity_bytes == oracle["virtual-size"]
    assert info.importable is importable
    if fmt == "VMDK":
        assert oracle["format-specific"]["data"]["create-type"] == subformat
        assert any("compression algorithm 0" in p for p in info.problems)


def test_differencing_names_its_parent(tmp_path: Path) -> None:
    info = inspect_image(unpack("fat-differential.vhd", tmp_path))
    assert info.details["parent_name"].endswith("fat-parent.vhd")
    (problem,) = [p for p in info.problems if "differencing" in p]
    assert "merge it into its parent" in problem
    # convert refuses a differencing VHD, so the advice must not send the user there first
    assert "manifestkit convert" not in problem
    with pytest.raises(ConversionError, match="differencing"):
        convert_image(info.path, tmp_path / "out.vmdk")


@pytest.mark.parametrize("name", ["image.vhd", "image-differential.vhd"])
def test_bad_footer_checksum_is_refused(qemu_img, tmp_path: Path, name: str) -> None:
    path = unpack(name, tmp_path)
    # the oracle refuses it too
    with pytest.raises(subprocess.CalledProcessError):
        qemu_img.info(path)
    with pytest.raises(ImageError, match=rf"{name}: VHD footer checksum") as caught:
        inspect_image(path)
    assert caught.value.exit_code == 2
