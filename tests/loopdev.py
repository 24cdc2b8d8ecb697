"""Loop devices for the whole-disk tests: ``losetup -f --show FILE`` (root only), detached after.

The tests skip only when losetup is unavailable (not installed, or not root); on CI (root,
Debian) they run, and a losetup that fails there fails the test."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

LOSETUP = shutil.which("losetup")
needs_losetup = pytest.mark.skipif(
    LOSETUP is None or os.geteuid() != 0,
    reason="losetup is unavailable (not installed, or not running as root)",
)


@contextmanager
def loop_device(backing: Path, *, partitions: bool = False) -> Iterator[str]:
    """A loop device over ``backing`` (``-P``: with its partitions), detached when the block
    ends."""
    assert LOSETUP is not None
    cmd = [LOSETUP, "-f", "--show"] + (["-P"] if partitions else []) + [str(backing)]
    device = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run([LOSETUP, "-d", device], check=False, capture_output=True)


def refresh_size(device: str) -> None:
    """Make the loop device take its backing file's new size (``losetup -c``)."""
    assert LOSETUP is not None
    subprocess.run([LOSETUP, "-c", device], check=True, capture_output=True)
