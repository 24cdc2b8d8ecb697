"""Stopped at every step boundary — Ctrl-C in process, SIGKILL in a real process — the same
command continues and finishes without a second conversion task, volume, snapshot or AMI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from manifestkit.workflow.ami import CHECKPOINTS
from tests.ami.conftest import (
    ami_process,
    bucket_keys,
    client,
    images_named,
    tagged,
    tasks_for_bucket,
    volume_exists,
)

COPY_REGION = "eu-west-1"


def _assert_one_of_each(
    sandbox: Any, ec2: Any, s3: Any, bucket: str, name: str, result: dict[str, Any]
) -> None:
    """One task, one snapshot, one AMI per region; the volume and the upload are gone."""
    assert len(tasks_for_bucket(ec2, bucket)) == 1
    (image,) = images_named(ec2, name)
    assert image["ImageId"] == result["image_id"] and image["State"] == "available"
    snapshots = tagged(ec2, "snapshot", result["run_id"])
    assert [s["SnapshotId"] for s in snapshots] == [result["snapshot_id"]]
    assert not volume_exists(ec2, result["volume_id"])
    assert bucket_keys(s3, bucket) == []
    (copy,) = images_named(client(sandbox, COPY_REGION), name)
    assert copy["ImageId"] == result["regions"][COPY_REGION]["image_id"]


@pytest.mark.parametrize("step", CHECKPOINTS)
def test_ctrl_c_at_each_step_then_the_same_command_continues(
    step: str,
    ami: Any,
    image_file: Any,
    name: str,
    sandbox: Any,
    ec2: Any,
    s3: Any,
    bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    image = image_file("raw")
    more = ["--copy-to", COPY_REGION, "--public"]
    monkeypatch.setenv("MANIFESTKIT_AMI_TEST_STOP", f"{step}:interrupt")
    code, _, err = ami(image, name, *more)
    assert code == 130, err
    assert "interrupted; nothing was removed. Continue with: manifestkit import-ami" in err
    assert err.count("\n") == 1 or "manifestkit: uploading" in err
    monkeypatch.delenv("MANIFESTKIT_AMI_TEST_STOP")
    code, result, err = ami(image, name, *more)
    assert code == 0, err
    # stopped before its first step, a run has nothing to continue (and left no journal)
    assert result["continued"] is (step != "upload")
    _assert_one_of_each(sandbox, ec2, s3, bucket, name, result)


#: SIGKILL where it differs from Ctrl-C: around the upload (its own record is continued), and
#: between a creating call and the journal entry of its id (the next run must find what it made)
KILL_STEPS = (
    "upload",
    "upload-done",
    "import-called",
    "snapshot-called",
    "register-called",
    "copy-called",
)


@pytest.mark.slow
@pytest.mark.parametrize("step", KILL_STEPS)
def test_kill_9_at_a_step_then_the_same_command_continues(
    step: str,
    image_file: Any,
    name: str,
    sandbox: Any,
    ec2: Any,
    s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    image = image_file("vmdk-stream")
    argv, env = ami_process(sandbox, bucket, tmp_path / "state", image, name,
                            "--copy-to", COPY_REGION, "--public", "-q")  # fmt: skip
    env["MANIFESTKIT_AMI_TEST_STOP"] = f"{step}:kill"
    killed = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    del env["MANIFESTKIT_AMI_TEST_STOP"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["continued"] is (step != "upload")
    _assert_one_of_each(sandbox, ec2, s3, bucket, name, result)


def test_a_finished_run_again_reports_its_ami_and_after_deregistering_makes_a_new_one(
    ami: Any, image_file: Any, name: str, ec2: Any, s3: Any, bucket: str
) -> None:
    image = image_file("raw")
    code, first, err = ami(image, name)
    assert code == 0, err
    code, again, err = ami(image, name)
    assert code == 0, err
    assert again["image_id"] == first["image_id"] and again["continued"] is True
    assert len(tasks_for_bucket(ec2, bucket)) == 1
    ec2.deregister_image(ImageId=first["image_id"])
    code, fresh, err = ami(image, name)
    assert code == 0, err
    assert fresh["image_id"] != first["image_id"] and fresh["run_id"] != first["run_id"]
    assert fresh["continued"] is False
    (found,) = images_named(ec2, name)
    assert found["ImageId"] == fresh["image_id"]
    assert len(tasks_for_bucket(ec2, bucket)) == 2 and bucket_keys(s3, bucket) == []


@pytest.mark.slow
def test_kill_9_in_the_middle_of_the_upload_continues_that_upload(
    tmp_path: Path, name: str, sandbox: Any, ec2: Any, s3: Any, bucket: str
) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(1 << 20))
    argv, env = ami_process(sandbox, bucket, tmp_path / "state", image, name,
                            "--part-size", "32KiB", "--workers", "1")  # fmt: skip
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while len(bucket_keys(s3, bucket)) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        assert process.stderr is not None
        process.stderr.close()
    sent = bucket_keys(s3, bucket)
    assert sent and not any(k.endswith("manifest.xml") for k in sent), "killed too late"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["continued"] is True
    assert f"uploading {image} (continuing)" in done.stderr  # the same upload, not a new one
    assert len(tasks_for_bucket(ec2, bucket)) == 1 and bucket_keys(s3, bucket) == []
    (found,) = images_named(ec2, name)
    assert found["ImageId"] == result["image_id"]


@pytest.mark.slow
def test_sigterm_while_waiting_for_the_snapshot_then_the_same_command_continues(
    image_file: Any,
    name: str,
    sandbox: Any,
    ec2: Any,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_SNAPSHOT_DELAY", "3")  # the sandbox's own knob
    image = image_file("raw")
    state = tmp_path / "state"
    argv, env = ami_process(sandbox, bucket, state, image, name)
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    journal: dict[str, Any] = {}
    while time.monotonic() < deadline and not journal.get("snapshot_id"):
        time.sleep(0.05)
        for path in state.glob("*.manifestkit-ami.json"):
            journal = json.loads(path.read_text() or "{}")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "terminated (SIGTERM); nothing was removed. Continue with: manifestkit import-ami" in err
    assert json.loads(out)["error"]["exit_code"] == 128 + signal.SIGTERM
    (snapshot,) = ec2.describe_snapshots(SnapshotIds=[journal["snapshot_id"]])["Snapshots"]
    assert snapshot["State"] == "pending"  # stopped while waiting, not at a checkpoint
    # the continued run waits for that same snapshot to settle
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["snapshot_id"] == journal["snapshot_id"]
    assert [s["SnapshotId"] for s in tagged(ec2, "snapshot", result["run_id"])] == [
        journal["snapshot_id"]
    ]
    assert len(tasks_for_bucket(ec2, bucket)) == 1 and bucket_keys(s3, bucket) == []
