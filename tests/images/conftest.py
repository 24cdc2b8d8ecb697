"""Image test fixtures: a ``qemu_img`` runner (the independent oracle) that skips without it."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


class QemuImg:
    def __init__(self, exe: str) -> None:
        self.exe = exe

    def __call__(self, *args: str) -> str:
        done = subprocess.run([self.exe, *args], capture_output=True, text=True, check=True)
        return done.stdout

    def info(self, path: Path, fmt: str | None = None) -> dict[str, Any]:
        extra = ["-f", fmt] if fmt else []
        return json.loads(self("info", "--output=json", *extra, str(path)))


@pytest.fixture(scope="session")
def qemu_img() -> QemuImg:
    exe = shutil.which("qemu-img")
    if not exe:
        pytest.skip("qemu-img not installed (apt-get install qemu-utils); CI installs it")
    return QemuImg(exe)


@pytest.fixture
def write_raw(tmp_path: Path) -> Callable[..., Path]:
    """Write a RAW file of ``size`` bytes with ``chunks`` ({offset: bytes}) of content."""

    def write(name: str, size: int, chunks: dict[int, bytes] | None = None) -> Path:
        path = tmp_path / name
        with open(path, "wb") as f:
            f.truncate(size)
            for offset, data in (chunks or {}).items():
                f.seek(offset)
                f.write(data)
        return path

    return write
