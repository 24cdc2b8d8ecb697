"""Loop devices for the whole-disk tests: ``losetup -f --show FILE`` (root only), detached after.

The tests skip only when this machine cannot attach a loop device at all (losetup not installed,
not root, or no loop device the container may use: probed once by attaching a small file); where
the probe attaches one, as on CI (root, Debian), they run, and a losetup that fails then fails the
test."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# root's tools live in /usr/sbin, which a minimal PATH (env -i, some CI shells) leaves out
LOSETUP = shutil.which("losetup") or shutil.which("losetup", path="/usr/sbin:/sbin")


def _cannot_attach() -> str | None:
    """Why no loop device can be attached here, or None when one can."""
    if LOSETUP is None or os.geteuid() != 0:
        return "losetup is unavailable (not installed, or not running as root)"
    with tempfile.NamedTemporaryFile(prefix="loop-probe-") as probe:
        probe.truncate(1 << 20)
        probe.flush()
        attached = subprocess.run(
            [LOSETUP, "-f", "--show", probe.name], capture_output=True, text=True, check=False
        )
        if attached.returncode:
            return f"no loop device can be attached here: {attached.stderr.strip()}"
        subprocess.run([LOSETUP, "-d", attached.stdout.strip()], check=False, capture_output=True)
    return None


_WHY_NOT = _cannot_attach()
needs_losetup = pytest.mark.skipif(_WHY_NOT is not None, reason=_WHY_NOT or "")


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
