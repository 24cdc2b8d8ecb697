"""Whole disks as sources (issue 13 item 3): block devices read like image files, mounted disks
refused, devices that shrink under the reader; and the writer's deterministic, write-once output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from loopdev import loop_device, needs_losetup, refresh_size

from manifestkit.cli import main
from manifestkit.convert import convert_image, open_disk
from manifestkit.convert.streamopt import StreamOptimizedStream, write_stream_optimized
from manifestkit.errors import ImageError
from manifestkit.images import inspect_image
from manifestkit.images.blocks.device import mounts_in_use, parse_mountinfo, related_devices
from manifestkit.images.reader import stat_regular

from .helpers import assert_same_disk, needs_qemu, qemu_make, write_mixed_raw

MiB = 1 << 20


def _stream_bytes(path: Path, *, workers: int, identity: bytes | None) -> bytes:
    disk = open_disk(path)
    try:
        return b"".join(
            StreamOptimizedStream(disk, name="d.vmdk", workers=workers, identity=identity)
        )
    finally:
        disk.close()


def test_output_is_deterministic_given_an_identity(mixed_raw: Path) -> None:
    one = _stream_bytes(mixed_raw, workers=1, identity=b"source-1")
    assert one == _stream_bytes(mixed_raw, workers=3, identity=b"source-1")
    other = _stream_bytes(mixed_raw, workers=2, identity=b"source-2")
    assert len(other) == len(one) and other != one  # only the descriptor's ids differ
    differ = [i for i, (a, b) in enumerate(zip(one, other, strict=True)) if a != b]
    assert len(differ) <= 40 and differ[-1] < 2048  # CID twice + longContentID, in the descriptor
    # without an identity the ids are random, as before
    assert _stream_bytes(mixed_raw, workers=1, identity=None) != _stream_bytes(
        mixed_raw, workers=1, identity=None
    )


def test_the_stream_is_what_the_file_writer_writes(mixed_raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "w.vmdk"
    disk = open_disk(mixed_raw)
    try:
        with open(out, "wb") as f:
            stats = write_stream_optimized(disk, f.fileno(), name="d.vmdk", identity=b"x")
    finally:
        disk.close()
    assert out.read_bytes() == _stream_bytes(mixed_raw, workers=2, identity=b"x")
    assert stats.output_bytes == out.stat().st_size


def test_closing_the_stream_early_stops_its_pool(mixed_raw: Path) -> None:
    import threading

    disk = open_disk(mixed_raw)
    try:
        chunks = iter(StreamOptimizedStream(disk, name="d.vmdk", workers=2))
        next(chunks)
        next(chunks)
        chunks.close()  # type: ignore[attr-defined]
    finally:
        disk.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("deflate")]


def test_fifos_and_char_devices_stay_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/null")):
        with pytest.raises(ImageError, match="not a regular file|FIFO"):
            inspect_image(path)
        with pytest.raises(ImageError):
            stat_regular(str(path), allow_block=True)


def test_mountinfo_parsing_and_related_devices(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "30 27 7:1 / /mnt/data rw,relatime - ext4 /dev/loop0p1 rw\n"
        "31 27 7:2 / /mnt/ro ro,relatime - ext4 /dev/loop0p2 ro\n"
        "32 27 253:0 / /mnt/my\\040lvm rw - xfs /dev/mapper/vg-lv rw\n"
        "33 27 7:3 / /mnt/roblock rw - ext4 /dev/loop0p3 ro\n"
    )
    assert parse_mountinfo(mountinfo.read_text().splitlines())[3] == (
        "253:0",
        "/mnt/my lvm",
        True,
    )
    # a fake sysfs: 7:0 has partitions 7:1, 7:2, 7:3; 7:1 holds the LVM volume 253:0
    sys_root = tmp_path / "sys"
    for name, dev in (("loop0p1", "7:1"), ("loop0p2", "7:2"), ("loop0p3", "7:3")):
        (sys_root / "7:0" / name).mkdir(parents=True)
        (sys_root / "7:0" / name / "partition").write_text("1\n")
        (sys_root / "7:0" / name / "dev").write_text(dev + "\n")
    (sys_root / "7:1" / "holders" / "dm-0").mkdir(parents=True)
    (sys_root / "7:1" / "holders" / "dm-0" / "dev").write_text("253:0\n")
    rdev = os.makedev(7, 0)
    assert related_devices(rdev, str(sys_root)) == {"7:0", "7:1", "7:2", "7:3", "253:0"}
    found = mounts_in_use(rdev, mountinfo=str(mountinfo), sys_root=str(sys_root))
    assert found == ["/mnt/data", "/mnt/my lvm"]  # the read-only ones are fine
    assert mounts_in_use(os.makedev(8, 0), mountinfo=str(mountinfo), sys_root=str(sys_root)) == []


@needs_losetup
@needs_qemu
def test_a_loop_device_inspects_and_converts_like_its_file(tmp_path: Path) -> None:
    backing = tmp_path / "disk.raw"
    write_mixed_raw(backing, size=8 * MiB)
    with loop_device(backing) as device:
        info = inspect_image(device)
        assert (info.format, info.file_bytes, info.capacity_bytes) == ("RAW", 8 * MiB, 8 * MiB)
        out = tmp_path / "disk.vmdk"
        convert_image(device, out)
        assert_same_disk(backing, out, "raw")
        # the CLI too, with its one-line result
        assert main(["convert", device, str(tmp_path / "cli.vmdk"), "-q"]) == 0
        assert_same_disk(backing, tmp_path / "cli.vmdk", "raw")


@needs_losetup
@needs_qemu
def test_a_device_holding_a_vhd_converts(tmp_path: Path, mixed_raw: Path) -> None:
    vhd = qemu_make(mixed_raw, tmp_path / "d.vhd", "vpc", "subformat=dynamic", "force_size=on")
    with loop_device(vhd) as device:
        assert inspect_image(device).format == "VHD"
        out = tmp_path / "d.vmdk"
        convert_image(device, out)
        assert_same_disk(mixed_raw, out, "raw")


@needs_losetup
def test_a_device_that_shrinks_mid_read_is_one_line(tmp_path: Path) -> None:
    backing = tmp_path / "shrinks.raw"
    with open(backing, "wb") as f:
        f.write(os.urandom(4 * MiB))
    with loop_device(backing) as device:
        disk = open_disk(device)  # the size is read now: 4 MiB
        try:
            os.truncate(backing, MiB)
            refresh_size(device)  # the device is 1 MiB from here on
            with pytest.raises(ImageError, match=rf"^{device}: .*(past the end|truncated)"):
                b"".join(StreamOptimizedStream(disk, name="d.vmdk", workers=2))
        finally:
            disk.close()


@needs_losetup
def test_a_disk_mounted_read_write_is_refused_unless_forced(tmp_path: Path) -> None:
    import shutil
    import subprocess

    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    if mkfs is None:
        pytest.skip("mkfs.ext4 is unavailable (e2fsprogs not installed)")
    backing = tmp_path / "fs.img"
    with open(backing, "wb") as f:
        f.truncate(16 * MiB)
    subprocess.run([mkfs, "-q", "-F", str(backing)], check=True, capture_output=True)
    point = tmp_path / "mnt"
    point.mkdir()
    out = tmp_path / "fs.vmdk"
    with loop_device(backing) as device:
        mounted = subprocess.run(["mount", device, str(point)], capture_output=True, check=False)
        if mounted.returncode:
            pytest.skip(f"mount is not permitted here: {mounted.stderr.decode().strip()}")
        try:
            with pytest.raises(ImageError, match=f"mounted read-write \\({point}\\)") as caught:
                convert_image(device, out)
            assert "--force" in (caught.value.fix or "")
            assert not out.exists()
            assert main(["convert", device, str(out), "-q"]) == 2
            assert main(["convert", device, str(out), "-q", "--force"]) == 0
            subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
            convert_image(device, tmp_path / "ro.vmdk")  # read-only: consistent, no --force
        finally:
            subprocess.run(["umount", str(point)], check=False, capture_output=True)
