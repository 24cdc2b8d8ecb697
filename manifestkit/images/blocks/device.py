"""Whole disks as sources: a block device (``/dev/sdb``, ``/dev/loop0``, an LVM volume) read like
an image file.

What differs from a file: ``stat`` says 0 bytes (the size comes from the device itself, by
seeking to its end, which the kernel answers from the device's capacity like the BLKGETSIZE64
ioctl), ``SEEK_DATA`` finds no holes (the writer and the part uploader find zeros by reading and
comparing), and a disk that is mounted read-write changes under the reader: its copy would be a
torn file system. ``mounts_in_use`` finds such mounts (Linux ``/proc/self/mountinfo``, the device
itself, its partitions and the device-mapper volumes built on it), ``check_not_mounted`` turns them
into one line unless the user forces it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

from manifestkit.errors import ImageError

MOUNTINFO = "/proc/self/mountinfo"
SYS_DEV_BLOCK = "/sys/dev/block"


def is_block_device(st: os.stat_result) -> bool:
    return stat.S_ISBLK(st.st_mode)


def device_size(fd: int, path: str) -> int:
    """The size of the open device (or file) ``fd`` in bytes, from its end."""
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    except OSError as exc:
        raise ImageError(f"{path}: cannot find the device's size: {exc.strerror or exc}") from exc


def _dev_name(rdev: int) -> str:
    return f"{os.major(rdev)}:{os.minor(rdev)}"


def related_devices(rdev: int, sys_root: str = SYS_DEV_BLOCK) -> set[str]:
    """``major:minor`` of the device, its partitions and whatever is built on them (holders:
    device-mapper, LVM, md), read from sysfs; just the device where sysfs cannot say."""
    found: set[str] = set()
    todo = [_dev_name(rdev)]
    while todo:
        name = todo.pop()
        if name in found or len(found) > 4096:
            continue
        found.add(name)
        base = os.path.join(sys_root, name)
        try:
            entries = os.listdir(base)
        except OSError:
            continue
        for entry in entries:  # partitions are subfolders holding a "partition" file
            if os.path.exists(os.path.join(base, entry, "partition")):
                todo.extend(_read_dev(os.path.join(base, entry, "dev")))
        try:
            holders = os.listdir(os.path.join(base, "holders"))
        except OSError:
            holders = []
        for holder in holders:
            todo.extend(_read_dev(os.path.join(base, "holders", holder, "dev")))
    return found


def _read_dev(path: str) -> list[str]:
    try:
        with open(path) as src:
            return [src.read(64).strip()]
    except OSError:
        return []


def parse_mountinfo(lines: Iterable[str]) -> list[tuple[str, str, bool]]:
    """(major:minor, mount point, read-write?) of every mount in ``/proc/self/mountinfo`` lines
    (proc(5): field 3 is major:minor, 5 the mount point, 6 the per-mount options; the super
    block's options after the ``-`` separator may say ``ro`` too)."""
    mounts = []
    for line in lines:
        fields = line.split()
        if len(fields) < 7 or "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        options = set(fields[5].split(","))
        super_options = set(fields[dash + 3].split(",")) if len(fields) > dash + 3 else set()
        writable = "rw" in options and "ro" not in super_options
        point = fields[4].replace("\\040", " ")
        mounts.append((fields[2], point, writable))
    return mounts


def mounts_in_use(
    rdev: int, *, mountinfo: str = MOUNTINFO, sys_root: str = SYS_DEV_BLOCK
) -> list[str]:
    """Mount points where the device, a partition of it or a volume on it is mounted read-write."""
    devices = related_devices(rdev, sys_root)
    try:
        with open(mountinfo) as src:
            mounts = parse_mountinfo(src.read(16 << 20).splitlines())
    except OSError:
        return []
    return [point for dev, point, writable in mounts if writable and dev in devices]


def check_not_mounted(path: str, *, force: bool = False) -> None:
    """Refuse a block device mounted read-write (its copy would be torn) unless ``force``."""
    try:
        st = os.stat(path)
    except OSError:
        return  # the opening says what is wrong
    if not is_block_device(st) or force:
        return
    points = mounts_in_use(st.st_rdev)
    if points:
        shown = ", ".join(points[:3]) + (f" and {len(points) - 3} more" if len(points) > 3 else "")
        raise ImageError(
            f"{path}: the disk is mounted read-write ({shown}); a copy taken while it changes is "
            "not consistent",
            fix="unmount it (or remount it read-only), or pass --force to read it anyway",
        )
