"""End-to-end fixtures: images of every importable format, and a per-test working copy.

The ``sandbox`` / ``s3`` / ``ec2`` / ``bucket`` / ``sandbox_clock`` fixtures come from
tests/conftest.py (the shared sandbox: moto S3 + EC2 behind SigV4 checks and the import endpoint,
on 127.0.0.1).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.helpers import new_user_env

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


@pytest.fixture(autouse=True)
def quick_importer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The importer gives up on a missing part after 1 s instead of at task expiry (days); tests
    that need a task to stay active waiting for its parts set a longer wait themselves."""
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_POLL_INTERVAL", "0.05")
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "1")
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
    _qemu(
        "convert",
        "-f",
        "raw",
        "-O",
        "vpc",
        "-o",
        "subformat=fixed,force_size=on",
        str(SAMPLES / "tiny.raw"),
        str(fixed),
    )
    found["vhd-fixed"] = fixed
    return found


@pytest.fixture
def workdir(tmp_path: Path, images: dict[str, Path]) -> Path:
    """A copy of every image in a fresh directory (upload state files are written beside them)."""
    for path in images.values():
        shutil.copyfile(path, tmp_path / path.name)
    return tmp_path


@pytest.fixture
def clean_env() -> Callable[..., dict[str, str]]:
    """``clean_env(**extra)``: the environment for a ``manifestkit`` subprocess."""
    return new_user_env
