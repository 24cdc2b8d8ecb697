"""Issue 11 item 2: a streamOptimized VMDK in qemu-img's layout (grain directory first, no footer)
cut short is not importable; ``inspect --deep`` checks grain-table entries against the file.

The images are made by qemu-img and cut with ``head -c``, as a user's interrupted copy would be.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from manifestkit.cli import main
from manifestkit.errors import ImageError
from manifestkit.images import inspect_image

MiB = 1024 * 1024
pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


@pytest.fixture(scope="module")
def stream_vmdk(tmp_path_factory) -> Path:
    """6 MiB of incompressible data, streamOptimized by qemu-img (GD and tables first)."""
    folder = tmp_path_factory.mktemp("trunc")
    raw = folder / "disk.raw"
    raw.write_bytes(random.Random(11).randbytes(6 * MiB))
    out = folder / "disk.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, out],
        check=True,
    )
    return out


def cut(src: Path, dst: Path, n: int) -> Path:
    with open(dst, "wb") as f:
        subprocess.run(["head", "-c", str(n), str(src)], stdout=f, check=True)
    return dst


def grain_table(path: Path) -> tuple[int, list[int]]:
    """(byte offset of the first grain table, its entries), read with struct as the spec says:
    header u64 gdOffset at byte 56, u32 numGTEsPerGT at 44; the GD's first u32 is GT 0's sector."""
    data = path.read_bytes()
    gtes = struct.unpack_from("<I", data, 44)[0]
    gd = struct.unpack_from("<Q", data, 56)[0] * 512
    gt = struct.unpack_from("<I", data, gd)[0] * 512
    return gt, list(struct.unpack_from(f"<{gtes}I", data, gt))


def test_issue11_item2_whole_file_is_importable(stream_vmdk):
    info = inspect_image(stream_vmdk)
    assert info.importable and info.details["layout"].startswith("gd-first")
    assert inspect_image(stream_vmdk, deep=True).details["deep"]["checked"] is True


@pytest.mark.parametrize("keep", [1_000_000, 3 * MiB + 7, "last-sector"])
def test_issue11_item2_truncated_qemu_layout_refused(stream_vmdk, tmp_path, capsys, keep):
    size = stream_vmdk.stat().st_size
    _, entries = grain_table(stream_vmdk)
    last_grain = max(entries) * 512
    n = last_grain + 100 if keep == "last-sector" else keep  # inside the last grain's data
    assert n < size
    short = cut(stream_vmdk, tmp_path / "short.vmdk", n)
    # qemu-img itself sees the damage only when it reads the data
    check = subprocess.run(["qemu-img", "convert", "-O", "raw", short, tmp_path / "x.raw"])
    assert check.returncode != 0

    with pytest.raises(ImageError, match="truncated VMDK") as exc:
        inspect_image(short)
    assert "copy it again" in str(exc.value)
    assert main(["inspect", str(short)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"manifestkit: error: {short}: truncated VMDK")
    assert len(err.strip().splitlines()) == 1


def test_issue11_item2_read_budget(stream_vmdk, tmp_path):
    info = inspect_image(stream_vmdk)
    assert info.details["bytes_read"] <= MiB


def patched(src: Path, dst: Path, entry: int, value: int) -> Path:
    data = bytearray(src.read_bytes())
    gt, entries = grain_table(src)
    assert entries[entry] > 1
    struct.pack_into("<I", data, gt + 4 * entry, value)
    dst.write_bytes(bytes(data))
    return dst


def test_issue11_item2_deep_checks_entry_past_end(stream_vmdk, tmp_path):
    bad = patched(stream_vmdk, tmp_path / "far.vmdk", 3, 0xFFFFFFF0)
    with pytest.raises(ImageError, match="past the end of the file"):
        inspect_image(bad)
    with pytest.raises(ImageError, match="past the end of the file"):
        inspect_image(bad, deep=True)


def test_issue11_item2_deep_checks_entry_not_a_grain(stream_vmdk, tmp_path, capsys):
    """An entry pointing inside the file but not at its grain (here: at grain 4's marker) passes the
    bounded check, which looks at the highest offset only; --deep reads every entry's marker."""
    _, entries = grain_table(stream_vmdk)
    bad = patched(stream_vmdk, tmp_path / "swap.vmdk", 3, entries[4])
    assert inspect_image(bad).importable
    with pytest.raises(ImageError, match="no grain marker for it"):
        inspect_image(bad, deep=True)
    assert main(["inspect", "--deep", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
