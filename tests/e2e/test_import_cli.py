"""``manifestkit import-instance`` / ``import-volume`` / ``tasks`` / ``cancel`` against the sandbox.

In-process ``main()`` with the sandbox's endpoints as flags (fast); the oracles are the sandbox's
own DescribeInstances / DescribeVolumes / DescribeConversionTasks through plain boto3, and the
bucket's contents.
"""

from __future__ import annotations

import json
import re
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from manifestkit.workflow import UploadRequest, upload_image

from .helpers import WAIT, ZONE, endpoint_flags, final_state, objects, run


def test_import_instance_wait_json(
    sandbox: Any, bucket: str, workdir: Path, ec2: Any, capsys: Any
) -> None:
    code, out, err = run(
        capsys,
        [
            "import-instance",
            str(workdir / "tiny-stream.vmdk"),
            "-p",
            "Windows",
            "-b",
            bucket,
            "-t",
            "m1.small",
            "-a",
            "x86_64",
            "-z",
            ZONE,
            "--user-data",
            "hello",
            "-d",
            "from cli",
            *WAIT,
            "--output",
            "json",
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 0, err
    task = json.loads(out)["task"]
    assert task["state"] == "completed" and task["kind"] == "instance"
    assert task["bytes_converted"] == (workdir / "tiny-stream.vmdk").stat().st_size
    (reservation,) = ec2.describe_instances(InstanceIds=[task["instance_id"]])["Reservations"]
    assert reservation["Instances"][0]["InstanceType"] == "m1.small"
    assert ec2.describe_volumes(VolumeIds=task["volume_ids"])["Volumes"]
    # the same task, as EC2 reports it independently
    assert final_state(ec2, task["id"])["State"] == "completed"
    # state-change lines went to stderr, the one JSON document to stdout
    assert "completed" in err


def test_import_volume_wait_text(
    sandbox: Any, bucket: str, workdir: Path, ec2: Any, capsys: Any
) -> None:
    code, out, err = run(
        capsys,
        [
            "import-volume",
            str(workdir / "tiny.raw"),
            "-z",
            ZONE,
            "-s",
            "3",
            "-b",
            bucket,
            *WAIT,
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 0, err
    first = out.splitlines()[0].split()
    assert first[0].startswith("import-vol-") and first[1] == "completed"
    volume_id = next(
        line.split()[1] for line in out.splitlines() if line.strip().startswith("volume")
    )
    (volume,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert volume["Size"] == 3 and volume["AvailabilityZone"] == ZONE


def test_dry_run_is_allowed_and_uploads_nothing(
    sandbox: Any, bucket: str, workdir: Path, ec2: Any, s3: Any, capsys: Any
) -> None:
    before = {t["ConversionTaskId"] for t in ec2.describe_conversion_tasks()["ConversionTasks"]}
    for argv in (
        ["import-instance", str(workdir / "tiny-dynamic.vhd"), "-p", "Windows", "-t", "m1.small"],
        ["import-volume", str(workdir / "tiny-dynamic.vhd"), "-z", ZONE],
    ):
        code, out, err = run(capsys, [*argv, "-b", bucket, "--dry-run", *endpoint_flags(sandbox)])
        assert code == 0, err
        assert "would have been allowed" in out
    assert objects(s3, bucket) == []
    after = {t["ConversionTaskId"] for t in ec2.describe_conversion_tasks()["ConversionTasks"]}
    assert after == before
    assert not list(workdir.glob("*.manifestkit-state.json"))


def test_dry_run_checks_the_bucket_as_the_real_run_would(
    sandbox: Any, workdir: Path, s3: Any, capsys: Any
) -> None:
    # EC2's DryRun checks only the permission: a missing bucket or one in another region
    # passed the dry run and then failed the real run
    missing = f"missing-{uuid.uuid4().hex[:16]}"
    argv = ["import-volume", str(workdir / "tiny.raw"), "-z", ZONE, "--dry-run"]
    code, out, err = run(capsys, [*argv, "-b", missing, *endpoint_flags(sandbox)])
    assert code == 2 and out == ""
    assert f"bucket {missing!r} does not exist" in err and "--create-bucket" in err
    code, out, err = run(
        capsys, [*argv, "-b", missing, "--create-bucket", *endpoint_flags(sandbox)]
    )
    assert code == 0, err
    assert "would have been allowed" in out
    assert missing not in [b["Name"] for b in s3.list_buckets()["Buckets"]]  # nothing created
    elsewhere = f"eu-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(
        Bucket=elsewhere, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    code, out, err = run(capsys, [*argv, "-b", elsewhere, *endpoint_flags(sandbox)])
    assert code == 2 and f"bucket {elsewhere!r} is in eu-west-1" in err
    code, out, err = run(
        capsys, [*argv, "-b", elsewhere, "--ignore-region-affinity", *endpoint_flags(sandbox)]
    )
    assert code == 0, err


def test_dry_run_still_checks_the_request(
    sandbox: Any, bucket: str, workdir: Path, capsys: Any
) -> None:
    code, _, err = run(
        capsys,
        [
            "import-volume",
            str(workdir / "tiny.raw"),
            "-z",
            "mars-north-1a",
            "-b",
            bucket,
            "--dry-run",
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 2
    assert "mars-north-1a" in err and err.count("\n") == 1


def test_unknown_instance_type_is_passed_through_and_ec2_decides(
    sandbox: Any, bucket: str, workdir: Path, s3: Any, capsys: Any
) -> None:
    code, out, err = run(
        capsys,
        [
            "import-instance",
            str(workdir / "tiny.raw"),
            "-p",
            "Windows",
            "-t",
            "zz9.plural",
            "-b",
            bucket,
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("manifestkit: error: ImportInstance: EC2 rejected the request")
    assert "zz9.plural" in line  # EC2's answer names the value we passed through
    # EC2 said so to the DryRun before the upload: nothing to clean up
    assert "nothing was uploaded" in line
    assert objects(s3, bucket) == [] and out == ""


def test_retry_with_manifest_url_after_a_failed_call(
    sandbox: Any, bucket: str, workdir: Path, ec2: Any, capsys: Any
) -> None:
    result = upload_image(
        UploadRequest(image=str(workdir / "tiny.raw"), bucket=bucket), sandbox.aws_settings()
    )
    code, out, err = run(
        capsys,
        [
            "import-instance",
            "--manifest-url",
            result.manifest_url,
            "-p",
            "Windows",
            "-t",
            "m1.small",
            *WAIT,
            "--output",
            "json",
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 0, err
    task = json.loads(out)["task"]
    assert task["state"] == "completed"
    assert task["image_bytes"] == result.file_bytes and task["volume_gib"] == result.volume_gib


def test_unknown_platform_is_warned_and_passed_through(
    sandbox: Any, bucket: str, workdir: Path, capsys: Any
) -> None:
    code, _, err = run(
        capsys,
        [
            "import-instance",
            str(workdir / "tiny.raw"),
            "-p",
            "Plan9",
            "-b",
            bucket,
            "--dry-run",
            *endpoint_flags(sandbox),
        ],
    )
    lines = err.strip().splitlines()
    assert lines[0].startswith("manifestkit: warning: platform 'Plan9' is not Windows")
    # the sandbox, like EC2, takes Windows and Linux only: its answer names our value
    assert code == 2 and "Plan9" in lines[-1]


@pytest.mark.parametrize("platform,warned", [("Windows", False), ("Linux", True)])
def test_only_windows_goes_unwarned(
    sandbox: Any, bucket: str, workdir: Path, capsys: Any, platform: str, warned: bool
) -> None:
    # the seed documents Platform "Valid Values: Windows"; Linux is sent, with a warning
    code, _, err = run(
        capsys,
        [
            "import-instance",
            str(workdir / "tiny.raw"),
            "-p",
            platform,
            "-b",
            bucket,
            "--dry-run",
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 0, err
    assert ("warning: platform 'Linux' is not Windows" in err) is warned


def test_manifest_url_not_reachable_is_exit_1(capsys: Any, sandbox: Any) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code, _, err = run(
        capsys,
        [
            "import-volume",
            "-z",
            ZONE,
            "--manifest-url",
            f"http://127.0.0.1:{port}/b/k.xml",
            *endpoint_flags(sandbox),
            # a loopback URL is fetched only when it is the configured endpoint (SECURITY.md)
            "--s3-endpoint-url",
            f"http://127.0.0.1:{port}",
        ],
    )
    assert code == 1
    assert err.startswith("manifestkit: error: cannot fetch the manifest") and err.count("\n") == 1


def test_manifest_url_that_is_not_a_manifest_is_exit_2(
    sandbox: Any, bucket: str, s3: Any, capsys: Any
) -> None:
    s3.put_object(Bucket=bucket, Key="notes.txt", Body=b"<html>hello</html>")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "notes.txt"})
    code, _, err = run(
        capsys,
        [
            "import-volume",
            "-z",
            ZONE,
            "--manifest-url",
            url,
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 2
    assert err.startswith("manifestkit: error: ") and err.count("\n") == 1


@pytest.mark.parametrize(
    "command", [["tasks", "import-i-deadbeef"], ["cancel", "import-i-deadbeef"]]
)
def test_task_that_does_not_exist(command: list[str], sandbox: Any, capsys: Any) -> None:
    code, out, err = run(capsys, [*command, *endpoint_flags(sandbox)])
    assert code == 1
    assert re.fullmatch(
        r"manifestkit: error: conversion task import-i-deadbeef does not exist "
        r"\(InvalidConversionTaskId(\.NotFound)?\); check the id and --region; "
        r"manifestkit tasks lists the tasks EC2 knows\n",
        err,
    ), err
    assert out == ""


def test_cancel_mid_transfer(
    sandbox: Any,
    bucket: str,
    workdir: Path,
    ec2: Any,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_DELAY", "0.3")  # 4 parts: >1 s of transfer
    code, out, err = run(
        capsys,
        [
            "import-volume",
            str(workdir / "tiny.raw"),
            "-z",
            ZONE,
            "-b",
            bucket,
            "--part-size",
            "8K",
            "--output",
            "json",
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 0, err
    task_id = json.loads(out)["task"]["id"]
    deadline = time.monotonic() + 10
    while final_state(ec2, task_id, 0)["ImportVolume"]["BytesConverted"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    code, out, err = run(
        capsys,
        [
            "cancel",
            task_id,
            "--reason",
            "changed my mind",
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 0, err
    assert out.startswith(f"cancelled {task_id}")
    task = final_state(ec2, task_id)
    assert task["State"] == "cancelled"
    assert 0 < task["ImportVolume"]["BytesConverted"] < (workdir / "tiny.raw").stat().st_size
    assert "changed my mind" in task["StatusMessage"]
    # and tasks reports it so
    code, out, _ = run(capsys, ["tasks", task_id, "--output", "json", *endpoint_flags(sandbox)])
    assert code == 0
    assert json.loads(out)["tasks"][0]["state"] == "cancelled"
    # cancelling it again is done already (exit 0), as deleting a deleted upload is
    code, out, err = run(capsys, ["cancel", task_id, "--output", "json", *endpoint_flags(sandbox)])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["already"] and doc["task"]["state"] == "cancelled"
    assert "changed my mind" in final_state(ec2, task_id)["StatusMessage"]


def test_cancel_of_a_completed_task_says_so_with_exit_1(
    sandbox: Any, bucket: str, workdir: Path, ec2: Any, capsys: Any
) -> None:
    argv = ["import-volume", str(workdir / "tiny.raw"), "-z", ZONE, "-b", bucket, *WAIT]
    code, out, err = run(capsys, [*argv, "--output", "json", *endpoint_flags(sandbox)])
    assert code == 0, err
    task_id = json.loads(out)["task"]["id"]
    assert final_state(ec2, task_id)["State"] == "completed"
    code, out, err = run(capsys, ["cancel", task_id, *endpoint_flags(sandbox)])
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert f"conversion task {task_id} has already completed; there is nothing to cancel" in err
    assert final_state(ec2, task_id)["State"] == "completed"


def test_wait_reports_a_service_side_cancellation_with_exit_1(
    sandbox: Any, bucket: str, workdir: Path, s3: Any, capsys: Any
) -> None:
    result = upload_image(
        UploadRequest(image=str(workdir / "tiny.raw"), bucket=bucket, part_size=8192),
        sandbox.aws_settings(),
    )
    s3.put_object(
        Bucket=bucket, Key=result.manifest_key.replace("manifest.xml", ".part2"), Body=b"\0" * 8193
    )  # one byte too many
    code, out, err = run(
        capsys,
        [
            "import-volume",
            "-z",
            ZONE,
            "--manifest-url",
            result.manifest_url,
            *WAIT,
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith("manifestkit: error: conversion task import-vol-")
    assert "ended cancelled" in last and "part" in last.lower()
    assert "cancelled" in out.splitlines()[0]


@pytest.mark.parametrize("configured_by", ["environment", "profile"])
def test_wait_polls_a_loopback_endpoint_configured_outside_the_flags_fast(
    sandbox: Any,
    bucket: str,
    workdir: Path,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
    configured_by: str,
) -> None:
    # the export lines of `manifestkit sandbox`, or a profile's endpoint_url: without the flags,
    # --wait polled the sandbox at the AWS pace, 15 s before the first change showed
    if configured_by == "environment":
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", sandbox.s3_endpoint_url)
        monkeypatch.setenv("AWS_ENDPOINT_URL_EC2", sandbox.ec2_endpoint_url)
        profile: list[str] = []
    else:
        config = workdir / "aws-config"
        config.write_text(
            f"[profile sb]\nregion = {sandbox.region}\nendpoint_url = {sandbox.s3_endpoint_url}\n"
            f"aws_access_key_id = {sandbox.access_key}\n"
            f"aws_secret_access_key = {sandbox.secret_key}\n"
        )
        monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
        profile = ["--profile", "sb"]
    argv = ["import-volume", str(workdir / "tiny.raw"), "-z", ZONE, "-b", bucket, "--wait"]
    started = time.monotonic()
    code, out, err = run(capsys, [*argv, "-q", *profile])
    assert code == 0, err
    assert "completed" in out
    assert time.monotonic() - started < 8, "polled at the AWS interval"
