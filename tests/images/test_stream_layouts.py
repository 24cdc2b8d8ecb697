"""streamOptimized in all three layouts, the --deep walk, and damaged streams.

Layouts (a) and (b) are built here from the spec (imagebuild.py); qemu-img reads each back to the
same bytes, so the builder is checked by an independent reader before our reader is tested on it.
qemu-img writes layout (c) itself.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from manifestkit.errors import ImageError
from manifestkit.images import inspect_image
from manifestkit.images.vmdk import SECTOR

from .imagebuild import build_stream, sample_disk

MiB = 1024 * 1024
#: not a multiple of the 64 KiB grain: the last grain is partial
SIZE = 5 * MiB + 3 * 512


@pytest.fixture(scope="module")
def raw() -> bytes:
    return sample_disk(SIZE)


def allocated_grains(raw: bytes) -> int:
    return sum(1 for i in range(0, len(raw), 65536) if raw[i : i + 65536].strip(b"\0"))


@pytest.fixture
def layout_image(tmp_path: Path, raw: bytes, qemu_img, request) -> Path:
    layout = request.param
    path = tmp_path / f"layout-{layout}.vmdk"
    path.write_bytes(build_stream(raw, layout))
    back = tmp_path / "back.raw"
    qemu_img("convert", "-q", "-f", "vmdk", "-O", "raw", str(path), str(back))
    assert back.read_bytes() == raw, "the test builder must write a stream qemu-img reads back"
    return path


@pytest.mark.parametrize(
    ("layout_image", "expected"),
    [("a", "footer"), ("b", "gd-first-eos")],
    indirect=["layout_image"],
)
def test_built_layouts(layout_image: Path, raw: bytes, qemu_img, expected: str) -> None:
    info = inspect_image(layout_image, deep=True)
    assert info.subformat == "streamOptimized" and info.importable
    assert info.details["layout"] == expected
    assert info.capacity_bytes == qemu_img.info(layout_image)["virtual-size"] == SIZE
    deep = info.details["deep"]
    assert deep["grains"] == allocated_grains(raw)
    assert deep["end_of_stream"] is True
    assert deep["footer"] is (expected == "footer")


def test_qemu_layout_without_eos(qemu_img, tmp_path: Path, raw: bytes) -> None:
    src = tmp_path / "src.raw"
    src.write_bytes(raw)
    path = tmp_path / "c.vmdk"
    qemu_img("convert", "-q", "-O", "vmdk", "-o", "subformat=streamOptimized", str(src), str(path))
    # cut qemu-img's zero tail: the stream then ends with the last grain, no end-of-stream marker
    data = path.read_bytes()
    end = len(data.rstrip(b"\0"))
    path.write_bytes(data[: -(-end // SECTOR) * SECTOR])
    assert qemu_img.info(path)["virtual-size"] == SIZE
    info = inspect_image(path, deep=True)
    assert info.details["layout"] == "gd-first"
    assert info.details["deep"]["end_of_stream"] is False
    assert info.details["deep"]["grains"] == allocated_grains(raw)
    assert info.importable


def test_layout_a_truncated_footer(tmp_path: Path, raw: bytes) -> None:
    data = build_stream(raw, "a")
    for cut in (512, 1024, 1536, 100):
        path = tmp_path / f"cut{cut}.vmdk"
        path.write_bytes(data[:-cut])
        with pytest.raises(ImageError, match=r"cut\d+\.vmdk: .*(truncated|footer)"):
            inspect_image(path)


def test_layout_a_footer_disagrees(tmp_path: Path, raw: bytes) -> None:
    data = bytearray(build_stream(raw, "a"))
    footer = len(data) - 1024
    struct.pack_into("<Q", data, footer + 12, 999)  # footer capacity
    path = tmp_path / "x.vmdk"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="footer"):
        inspect_image(path)


def test_corrupt_grain_found_only_by_deep(tmp_path: Path, raw: bytes) -> None:
    data = bytearray(build_stream(raw, "b"))
    (overhead,) = struct.unpack_from("<Q", data, 64)
    at = overhead * SECTOR
    size = struct.unpack_from("<I", data, at + 8)[0]
    data[at + 12 + size // 2] ^= 0xFF  # flip bits in the middle of the first grain's deflate data
    path = tmp_path / "corrupt.vmdk"
    path.write_bytes(bytes(data))
    assert inspect_image(path).importable  # the header cannot see it
    with pytest.raises(ImageError, match=r"corrupt\.vmdk: .*grain at byte"):
        inspect_image(path, deep=True)


def test_truncated_stream_found_by_deep(tmp_path: Path, raw: bytes) -> None:
    data = build_stream(raw, "b", eos=False)
    path = tmp_path / "short.vmdk"
    path.write_bytes(data[:-300])  # mid-grain
    with pytest.raises(ImageError, match="truncated|cut short"):
        inspect_image(path, deep=True)


def test_grain_marker_with_absurd_size(tmp_path: Path, raw: bytes) -> None:
    data = bytearray(build_stream(raw, "b"))
    (overhead,) = struct.unpack_from("<Q", data, 64)
    struct.pack_into("<I", data, overhead * SECTOR + 8, 0x7FFFFFFF)
    path = tmp_path / "absurd.vmdk"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="truncated|claims"):
        inspect_image(path, deep=True)


def test_grain_marker_past_capacity(tmp_path: Path, raw: bytes) -> None:
    data = bytearray(build_stream(raw, "b"))
    (overhead,) = struct.unpack_from("<Q", data, 64)
    struct.pack_into("<Q", data, overhead * SECTOR, 10**9)
    path = tmp_path / "lba.vmdk"
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError, match="not a grain"):
        inspect_image(path, deep=True)


@pytest.mark.parametrize(("layout", "eos"), [("a", True), ("b", True), ("b", False)])
def test_deep_reports_progress(tmp_path: Path, raw: bytes, layout: str, eos: bool) -> None:
    path = tmp_path / "p.vmdk"
    path.write_bytes(build_stream(raw, layout, eos=eos))

    class Recorder:
        def __init__(self) -> None:
            self.total = 0
            self.done = 0
            self.closed = False

        def start(self, total: int, description: str) -> None:
            self.total = total

        def advance(self, amount: int) -> None:
            self.done += amount

        def close(self) -> None:
            self.closed = True

    progress = Recorder()
    inspect_image(path, deep=True, progress=progress)
    assert progress.total == path.stat().st_size
    # the bar ends full: the header, descriptor and any leading tables count too
    assert progress.done == progress.total and progress.closed
