"""Each bad input gives one clear error, exit 2 from the CLI, and leaves no output behind."""

from __future__ import annotations

import errno
import gzip
import logging
import os
import shutil
import struct
from pathlib import Path

import pytest

from manifestkit.cli import main
from manifestkit.convert import convert_image
from manifestkit.errors import ConversionError, ImageError
from manifestkit.images import vmdk

from .helpers import assert_same_disk, needs_qemu, qemu, qemu_make

pytestmark = needs_qemu

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "dfvfs"


def _nothing_left(folder: Path, output: Path) -> None:
    assert not output.exists()
    assert not [p.name for p in folder.iterdir() if ".partial" in p.name]


def _convert_fails(source: Path, output: Path, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        convert_image(source, output)
    _nothing_left(output.parent, output)


def _sparse(mixed_raw: Path, tmp_path: Path) -> tuple[Path, vmdk.SparseHeader]:
    source = qemu_make(mixed_raw, tmp_path / "sparse.vmdk", "vmdk", "subformat=monolithicSparse")
    with open(source, "rb") as f:
        header = vmdk.parse_sparse_header(f.read(512))
    return source, header


def _first_gt_sector(path: Path, header: vmdk.SparseHeader) -> int:
    with open(path, "rb") as f:
        f.seek(header.gd_offset * 512)
        return struct.unpack("<I", f.read(4))[0]


def test_corrupt_grain_table(mixed_raw: Path, tmp_path: Path) -> None:
    source, header = _sparse(mixed_raw, tmp_path)
    gt = _first_gt_sector(source, header)
    with open(source, "r+b") as f:
        f.seek(gt * 512 + 8)
        f.write(b"\xa7\x13\xff\x3c" * 4)  # garbage entries for grains 2-5
    _convert_fails(source, tmp_path / "out.vmdk", ImageError, "corrupt grain table")


def test_corrupt_grain_directory_falls_back_to_the_redundant_one(
    mixed_raw: Path, tmp_path: Path
) -> None:
    source, header = _sparse(mixed_raw, tmp_path)
    assert header.flags & vmdk.FLAG_REDUNDANT_GD and header.rgd_offset
    pristine = tmp_path / "pristine.vmdk"
    shutil.copy(source, pristine)
    with open(source, "r+b") as f:
        f.seek(header.gd_offset * 512)
        f.write(struct.pack("<I", 0x7FFFFFF0))
    out = tmp_path / "out.vmdk"
    convert_image(source, out)
    assert_same_disk(pristine, out, "vmdk")
    out.unlink()
    with open(source, "r+b") as f:  # now both directories are damaged
        f.seek(header.rgd_offset * 512)
        f.write(struct.pack("<I", 0x7FFFFFF0))
    _convert_fails(source, out, ImageError, "corrupt grain directory")


def test_grain_entry_pointing_into_metadata(mixed_raw: Path, tmp_path: Path) -> None:
    source, header = _sparse(mixed_raw, tmp_path)
    gt = _first_gt_sector(source, header)
    with open(source, "r+b") as f:
        f.seek(gt * 512)
        f.write(struct.pack("<I", 3))  # grain 0 "at sector 3": the descriptor
    _convert_fails(source, tmp_path / "out.vmdk", ImageError, "inside the header and tables")


def test_grains_past_end_of_file(mixed_raw: Path, tmp_path: Path) -> None:
    source, _ = _sparse(mixed_raw, tmp_path)
    with open(source, "r+b") as f:
        f.truncate(source.stat().st_size - 3 * 65536)
    _convert_fails(source, tmp_path / "out.vmdk", ImageError, "past the end of the file")


def test_truncated_stream_optimized(mixed_raw: Path, tmp_path: Path) -> None:
    source = tmp_path / "stream.vmdk"
    convert_image(mixed_raw, source)
    with open(source, "r+b") as f:
        f.truncate(source.stat().st_size - 1536)  # footer and end-of-stream marker gone
    _convert_fails(source, tmp_path / "out.vmdk", ImageError, "stream is truncated")


@pytest.mark.parametrize(
    ("offset", "data", "words"),
    [
        # inside the deflate stream of grain 0 (after its 12-byte marker)
        pytest.param(12 + 40, os.urandom(64), "grain 0 .*(inflate)", id="does-not-inflate"),
        # the grain marker's LBA
        pytest.param(0, struct.pack("<Q", 999 * 128), "corrupt grain table", id="marker-wrong-lba"),
    ],
)
def test_first_grain_damaged(
    mixed_raw: Path, tmp_path: Path, offset: int, data: bytes, words: str
) -> None:
    source = tmp_path / "stream.vmdk"
    convert_image(mixed_raw, source)
    with open(source, "rb") as f:
        header = vmdk.parse_sparse_header(f.read(512))
    with open(source, "r+b") as f:
        f.seek(header.overhead * 512 + offset)
        f.write(data)
    _convert_fails(source, tmp_path / "out.vmdk", ImageError, words)


def test_missing_extent_file(mixed_raw: Path, tmp_path: Path) -> None:
    source = qemu_make(mixed_raw, tmp_path / "flat.vmdk", "vmdk", "subformat=monolithicFlat")
    (tmp_path / "flat-flat.vmdk").unlink()
    _convert_fails(
        source, tmp_path / "out.vmdk", ImageError, "extent file 'flat-flat.vmdk' is missing"
    )


def _descriptor(folder: Path, extent: str, sectors: int = 128) -> Path:
    path = folder / "evil.vmdk"
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n"
        f'createType="monolithicFlat"\n\n# Extent description\nRW {sectors} FLAT "{extent}" 0\n'
    )
    return path


@pytest.mark.parametrize("name", ["../secret.img", "sub/../../secret.img", "/etc/hostname"])
def test_extent_path_outside_the_folder(tmp_path: Path, name: str) -> None:
    (tmp_path / "secret.img").write_bytes(b"s" * 65536)
    folder = tmp_path / "vm"
    (folder / "sub").mkdir(parents=True)
    source = _descriptor(folder, name)
    _convert_fails(source, folder / "out.vmdk", ImageError, "absolute path|outside the descriptor")


def test_extent_symlink_leading_outside(tmp_path: Path) -> None:
    (tmp_path / "secret.img").write_bytes(b"s" * 65536)
    folder = tmp_path / "vm"
    folder.mkdir()
    (folder / "disk-flat.vmdk").symlink_to(tmp_path / "secret.img")
    source = _descriptor(folder, "disk-flat.vmdk")
    _convert_fails(source, folder / "out.vmdk", ImageError, "outside the descriptor")


def test_extent_inside_the_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.img").write_bytes(b"d" * 65536)
    source = _descriptor(tmp_path, "sub/data.img")
    info = convert_image(source, tmp_path / "out.vmdk")
    assert info.capacity_bytes == 65536


def test_output_is_the_input(mixed_raw: Path, tmp_path: Path) -> None:
    source = tmp_path / "disk.raw"
    shutil.copy(mixed_raw, source)
    before = source.read_bytes()
    (tmp_path / "link.vmdk").symlink_to(source)
    os.link(source, tmp_path / "hard.vmdk")
    for target in (
        source,
        tmp_path / "link.vmdk",
        tmp_path / "hard.vmdk",
        tmp_path / "." / "disk.raw",
    ):
        with pytest.raises(ConversionError, match="is the image being converted"):
            convert_image(source, target, overwrite=True)
    assert source.read_bytes() == before


def test_output_is_an_extent_file(mixed_raw: Path, tmp_path: Path) -> None:
    source = qemu_make(mixed_raw, tmp_path / "flat.vmdk", "vmdk", "subformat=monolithicFlat")
    with pytest.raises(ConversionError, match="is the image being converted"):
        convert_image(source, tmp_path / "flat-flat.vmdk", overwrite=True)


def test_not_enough_space(mixed_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.disk_usage

    def tiny(path: str) -> shutil._ntuple_diskusage:  # type: ignore[name-defined]
        usage = real(path)
        return type(usage)(usage.total, usage.total - 4096, 4096)

    monkeypatch.setattr(shutil, "disk_usage", tiny)
    _convert_fails(mixed_raw, tmp_path / "out.vmdk", ConversionError, "not enough free space")


def test_worst_case_space_is_a_warning_not_a_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A dd copy of a disk is all data to the filesystem but mostly zeros: 8 MiB of written zeros
    convert to a few KiB, so 1 MiB free must not refuse it (it did: the worst case is 8 MiB+)."""
    source = tmp_path / "dd.raw"
    source.write_bytes(bytes(8 * 1024 * 1024))  # really written, not sparse
    real = shutil.disk_usage

    def one_mib(path: str) -> shutil._ntuple_diskusage:  # type: ignore[name-defined]
        usage = real(path)
        return type(usage)(usage.total, usage.total - 2**20, 2**20)

    monkeypatch.setattr(shutil, "disk_usage", one_mib)
    # the CLI (run by earlier tests) leaves the logger unpropagated with its own handler
    monkeypatch.setattr(logging.getLogger("manifestkit"), "handlers", [caplog.handler])
    with caplog.at_level("WARNING", logger="manifestkit"):
        info = convert_image(source, tmp_path / "out.vmdk")
    assert info.importable and info.file_bytes < 2**20
    assert any("may need up to" in r.getMessage() for r in caplog.records)
    assert_same_disk(source, tmp_path / "out.vmdk", "raw")


def test_output_exists_needs_force(mixed_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.vmdk"
    out.write_bytes(b"keep me")
    with pytest.raises(ConversionError, match="already exists"):
        convert_image(mixed_raw, out)
    assert out.read_bytes() == b"keep me"
    convert_image(mixed_raw, out, overwrite=True)
    assert out.stat().st_size > 512


def test_force_never_replaces_a_device_or_pipe(mixed_raw: Path, tmp_path: Path) -> None:
    """--force replaces an existing image file, not a device or pipe node (as root, renaming over
    /dev/full replaced the device with a regular file)."""
    fifo = tmp_path / "pipe.vmdk"
    os.mkfifo(fifo)
    with pytest.raises(ConversionError, match="not a regular file"):
        convert_image(mixed_raw, fifo, overwrite=True)
    assert fifo.is_fifo()
    assert not [p.name for p in tmp_path.iterdir() if ".partial" in p.name]


class _InterruptAfter:
    def __init__(self, calls: int) -> None:
        self.calls = calls

    def start(self, total: int, description: str) -> None:
        pass

    def advance(self, amount: int) -> None:
        self.calls -= 1
        if self.calls <= 0:
            raise KeyboardInterrupt

    def close(self) -> None:
        pass


def test_interrupted_conversion_leaves_nothing(mixed_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.vmdk"
    with pytest.raises(KeyboardInterrupt):
        convert_image(mixed_raw, out, progress=_InterruptAfter(2))
    _nothing_left(tmp_path, out)


def test_qcow2_is_refused(mixed_raw: Path, tmp_path: Path) -> None:
    source = qemu_make(mixed_raw, tmp_path / "disk.qcow2", "qcow2")
    _convert_fails(source, tmp_path / "out.vmdk", ConversionError, "qcow2")


def test_gzipped_image_is_refused_with_the_way_out(mixed_raw: Path, tmp_path: Path) -> None:
    source = tmp_path / "disk.raw.gz"
    with open(mixed_raw, "rb") as src, gzip.open(source, "wb") as dst:
        shutil.copyfileobj(src, dst)
    _convert_fails(source, tmp_path / "out.vmdk", ConversionError, "gunzip -k")


def test_differencing_vhd_is_refused(tmp_path: Path) -> None:
    packed = CORPUS / "fat-differential.vhd.gz"
    if not packed.exists():
        pytest.skip(f"{packed} is absent")
    source = tmp_path / "diff.vhd"
    with gzip.open(packed, "rb") as src, open(source, "wb") as dst:
        shutil.copyfileobj(src, dst)
    _convert_fails(source, tmp_path / "out.vmdk", ConversionError, "differencing VHD")


def test_cli_error_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "secret.img").write_bytes(b"s" * 512)
    folder = tmp_path / "vm"
    folder.mkdir()
    source = _descriptor(folder, "../secret.img", sectors=1)
    out = folder / "out.vmdk"
    assert main(["convert", str(source), str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("manifestkit: error: ") and str(source) in err[0]
    assert not out.exists()


def test_disk_full_while_writing(
    mixed_raw: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls = {"n": 0}

    def full_after_two(fd: int, data: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".partial"):
            calls["n"] += 1
            if calls["n"] > 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_after_two)
    _convert_fails(
        mixed_raw, tmp_path / "out.vmdk", ConversionError, "No space left.*free some space"
    )


def test_vmdk_snapshot_is_refused(mixed_raw: Path, tmp_path: Path) -> None:
    base = qemu_make(mixed_raw, tmp_path / "base.vmdk", "vmdk", "subformat=monolithicSparse")
    delta = tmp_path / "base-000001.vmdk"
    made = qemu("create", "-f", "vmdk", "-b", base.name, "-F", "vmdk", str(delta))
    assert made.returncode == 0, made.stderr
    _convert_fails(delta, tmp_path / "out.vmdk", ConversionError, "snapshot")


def test_empty_disk_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "empty.raw"
    source.write_bytes(b"")
    _convert_fails(source, tmp_path / "out.vmdk", ImageError, "empty")


def test_output_folder_missing_or_output_a_folder(mixed_raw: Path, tmp_path: Path) -> None:
    with pytest.raises(ConversionError, match="does not exist"):
        convert_image(mixed_raw, tmp_path / "nope" / "out.vmdk")
    with pytest.raises(ConversionError, match="mixed.raw is not a folder"):
        convert_image(mixed_raw, mixed_raw / "out.vmdk")
    folder = tmp_path / "out.vmdk"
    folder.mkdir()
    with pytest.raises(ConversionError, match="is a folder"):  # before converting, not after
        convert_image(mixed_raw, folder, overwrite=True)
    assert folder.is_dir() and list(folder.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


def test_dynamic_vhd_whose_header_offset_is_outside_the_file(tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "samples" / "tiny-dynamic.vhd"
    data = bytearray(sample.read_bytes())
    footer = bytearray(data[-512:])
    footer[16:24] = b"\xff" * 8  # data offset (spec "Hard Disk Footer Format", offset 16)
    footer[64:68] = bytes(4)  # spec: the checksum is the one's complement of the byte sum
    footer[64:68] = struct.pack(">I", ~sum(footer) & 0xFFFFFFFF)
    data[:512] = data[-512:] = footer
    source = tmp_path / "bad.vhd"
    source.write_bytes(bytes(data))
    _convert_fails(source, tmp_path / "out.vmdk", ImageError, "dynamic header offset")
