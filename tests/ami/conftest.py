"""Fixtures of the import-ami tests: fast sandbox knobs, a fresh copy of each sample image, and
``ami`` — ``manifestkit import-ami`` run in process against the session sandbox.

The sandbox fixtures (``sandbox``, ``s3``, ``ec2``, ``bucket``) come from tests/conftest.py.
What the tests check is read back through plain boto3 clients (the oracle), never from the
command's own output alone.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest

from manifestkit.cli import main
from tests.e2e.helpers import endpoint_flags

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
IMAGES = {"raw": "tiny.raw", "vmdk-stream": "tiny-stream.vmdk", "vhd-dynamic": "tiny-dynamic.vhd"}
RUN_TAG = "manifestkit:run"


@pytest.fixture(autouse=True)
def quick_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots and images stay ``pending`` for 0.05 s (so the waiting code runs, briefly)."""
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_POLL_INTERVAL", "0.05")
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "1")
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_SNAPSHOT_DELAY", "0.05")
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_IMAGE_DELAY", "0.05")
    for name in (
        "MANIFESTKIT_SANDBOX_PART_DELAY",
        "MANIFESTKIT_SANDBOX_FAIL_SNAPSHOT",
        "MANIFESTKIT_SANDBOX_FAIL_COPY",
        "MANIFESTKIT_SANDBOX_DENY",
        "MANIFESTKIT_AMI_TEST_STOP",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def image_file(tmp_path: Path) -> Callable[[str], Path]:
    def copy(kind: str) -> Path:
        target = tmp_path / "img" / IMAGES[kind]
        target.parent.mkdir(exist_ok=True)
        shutil.copyfile(SAMPLES / IMAGES[kind], target)
        return target

    return copy


@pytest.fixture
def name() -> str:
    return f"mk-test ({uuid.uuid4().hex[:10]})"


def sandbox_flags(sandbox: Any, bucket: str, state_dir: Path) -> list[str]:
    return [
        *endpoint_flags(sandbox),
        "-b",
        bucket,
        "--state-dir",
        str(state_dir),
        "--interval",
        "0.05",
    ]


def ami_args(
    sandbox: Any, bucket: str, state_dir: Path, image: Path, ami_name: str, *more: str
) -> list[str]:
    """``--output json import-ami IMAGE --name NAME`` against the session sandbox, then ``more``."""
    return ["--output", "json", "import-ami", str(image), "--name", ami_name,
            *sandbox_flags(sandbox, bucket, state_dir), *more]  # fmt: skip


def ami_process(
    sandbox: Any, bucket: str, state_dir: Path, image: Path, ami_name: str, *more: str
) -> tuple[list[str], dict[str, str]]:
    """The argv and environment of ``ami_args`` run as ``python -m manifestkit`` (a real process,
    for signals)."""
    argv = [sys.executable, "-m", "manifestkit",
            *ami_args(sandbox, bucket, state_dir, image, ami_name, *more)]  # fmt: skip
    return argv, {**os.environ, **sandbox.env(), "PYTHONPATH": str(ROOT)}


@pytest.fixture
def ami(
    sandbox: Any, bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, Any, str]]:
    """``ami(IMAGE, NAME, *more)`` -> (exit code, the JSON document or stdout, stderr)."""

    def run(image: Path, ami_name: str, *more: str) -> tuple[int, Any, str]:
        try:
            code = main(ami_args(sandbox, bucket, tmp_path / "state", image, ami_name, *more))
        except SystemExit as exc:
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        try:
            document: Any = json.loads(out) if out.strip() else None
        except ValueError:
            document = out
        return code, document, err

    return run


def client(sandbox: Any, region: str) -> Any:
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=sandbox.ec2_endpoint_url,
        aws_access_key_id=sandbox.access_key,
        aws_secret_access_key=sandbox.secret_key,
    )


def images_named(ec2: Any, ami_name: str) -> list[dict[str, Any]]:
    return ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [ami_name]}])[
        "Images"
    ]


def tagged(ec2: Any, kind: str, run_id: str) -> list[dict[str, Any]]:
    """Snapshots or volumes carrying the run's tag."""
    flt = [{"Name": f"tag:{RUN_TAG}", "Values": [run_id]}]
    if kind == "snapshot":
        return ec2.describe_snapshots(OwnerIds=["self"], Filters=flt)["Snapshots"]
    return ec2.describe_volumes(Filters=flt)["Volumes"]


def volume_exists(ec2: Any, volume_id: str) -> bool:
    return bool(
        ec2.describe_volumes(Filters=[{"Name": "volume-id", "Values": [volume_id]}])["Volumes"]
    )


def tasks_for_bucket(ec2: Any, bucket: str) -> list[dict[str, Any]]:
    """Conversion tasks whose manifest is in ``bucket`` (each test has its own bucket)."""
    found = []
    for task in ec2.describe_conversion_tasks()["ConversionTasks"]:
        url = task.get("ImportVolume", {}).get("Image", {}).get("ImportManifestUrl", "")
        if f"/{bucket}/" in url:
            found.append(task)
    return found


def bucket_keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
