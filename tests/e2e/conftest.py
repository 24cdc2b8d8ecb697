"""End-to-end fixtures: images of every importable format, and a per-test working copy.

The ``sandbox`` / ``s3`` / ``ec2`` / ``bucket`` / ``sandbox_clock`` fixtures come from
tests/conftest.py (the shared sandbox: moto S3 + EC2 behind SigV4 checks and the import endpoint,
on 127.0.0.1).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


@pytest.fixture(autouse=True)
def quick_importer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The importer gives up on a missing part after 2 s instead of at task expiry (days)."""
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_POLL_INTERVAL", "0.05")
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "2")
    monkeypatch.delenv("MANIFESTKIT_SANDBOX_PART_DELAY", raising=False)


def _qemu(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small image per importable kind: the samples, plus a fixed VHD made with qemu-img."""
    folder = tmp_path_factory.mktemp("images")
    found = {
        "vmdk-stream": SAMPLES / "tiny-stream.vmdk",
        "vhd-dynamic": SAMPLES / "tiny-dynamic.vhd",
        "raw": SAMPLES / "tiny.raw",
    }
    fixed = folder / "tiny-fixed.vhd"
    _qemu("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on",
          str(SAMPLES / "tiny.raw"), str(fixed))
    found["vhd-fixed"] = fixed
    return found


@pytest.fixture
def workdir(tmp_path: Path, images: dict[str, Path]) -> Path:
    """A copy of every image in a fresh directory (upload state files are written beside them)."""
    for path in images.values():
        shutil.copyfile(path, tmp_path / path.name)
    return tmp_path


def fresh_bucket(s3: Any) -> str:
    name = f"e2e-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name
