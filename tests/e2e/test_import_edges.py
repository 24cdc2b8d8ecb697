"""Edges of the import: broken manifests, expired URLs, the 5-task limit, --no-upload + resume,
delete refusing while a task reads the manifest, and refused credentials."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest

from manifestkit.workflow import UploadRequest, upload_image

from .helpers import ZONE, describe, endpoint_flags, final_state, objects, run


def cancel_everything_active(ec2: Any) -> None:
    for task in ec2.describe_conversion_tasks()["ConversionTasks"]:
        if task["State"] == "active":
            ec2.cancel_conversion_task(ConversionTaskId=task["ConversionTaskId"])
    deadline = time.monotonic() + 10
    while any(
        t["State"] in ("active", "cancelling")
        for t in ec2.describe_conversion_tasks()["ConversionTasks"]
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def upload_raw(sandbox: Any, bucket: str, workdir: Path, **kw: Any) -> Any:
    return upload_image(
        UploadRequest(image=str(workdir / "tiny.raw"), bucket=bucket, part_size=8192, **kw),
        sandbox.aws_settings(),
    )


def start_volume_import(capsys: Any, sandbox: Any, url: str) -> str:
    code, out, err = run(
        capsys,
        [
            "import-volume",
            "-z",
            ZONE,
            "--manifest-url",
            url,
            "--output",
            "json",
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 0, err
    return json.loads(out)["task"]["id"]


def no_upload_volume(
    capsys: Any, sandbox: Any, image: Path, bucket: str, *extra: str
) -> dict[str, Any]:
    """``import-volume IMAGE --no-upload --output json``: the task starts, the parts never come."""
    code, out, err = run(
        capsys,
        [
            "import-volume",
            str(image),
            "-z",
            ZONE,
            "-b",
            bucket,
            *extra,
            "--no-upload",
            "--output",
            "json",
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 0, err
    return json.loads(out)


def watch(capsys: Any, sandbox: Any, task_id: str) -> tuple[int, str, str]:
    """``tasks TASK_ID --watch --output json`` polling fast."""
    return run(
        capsys,
        [
            "tasks",
            task_id,
            "--watch",
            "--interval",
            "0.05",
            "--output",
            "json",
            *endpoint_flags(sandbox),
        ],
    )


def test_missing_part_cancels_naming_the_part(
    sandbox: Any, bucket: str, workdir: Path, s3: Any, ec2: Any, capsys: Any
) -> None:
    result = upload_raw(sandbox, bucket, workdir)
    s3.delete_object(Bucket=bucket, Key=result.manifest_key.replace("manifest.xml", ".part3"))
    task = final_state(ec2, start_volume_import(capsys, sandbox, result.manifest_url))
    assert task["State"] == "cancelled"
    assert "part" in task["StatusMessage"].lower() and "3" in task["StatusMessage"]


def test_wrong_part_size_cancels_naming_the_size(
    sandbox: Any, bucket: str, workdir: Path, s3: Any, ec2: Any, capsys: Any
) -> None:
    result = upload_raw(sandbox, bucket, workdir)
    s3.put_object(
        Bucket=bucket, Key=result.manifest_key.replace("manifest.xml", ".part0"), Body=b"\1" * 100
    )
    task = final_state(ec2, start_volume_import(capsys, sandbox, result.manifest_url))
    assert task["State"] == "cancelled"
    message = task["StatusMessage"].lower()
    assert "part" in message and ("size" in message or "bytes" in message), message


def test_expired_part_urls_cancel_naming_the_expiry(
    sandbox: Any, bucket: str, workdir: Path, s3: Any, ec2: Any, capsys: Any, sandbox_clock: Any
) -> None:
    result = upload_raw(sandbox, bucket, workdir, expires_in=3600)
    # the manifest itself stays readable; the URLs inside it die an hour from now
    manifest_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": result.manifest_key}, ExpiresIn=7 * 86400
    )
    sandbox_clock.advance(2 * 3600)
    task = final_state(ec2, start_volume_import(capsys, sandbox, manifest_url))
    assert task["State"] == "cancelled"
    assert "expired" in task["StatusMessage"].lower(), task["StatusMessage"]


def test_expired_manifest_url_is_refused_before_any_task(
    sandbox: Any, bucket: str, workdir: Path, ec2: Any, capsys: Any, sandbox_clock: Any
) -> None:
    result = upload_raw(sandbox, bucket, workdir, expires_in=3600)
    before = len(ec2.describe_conversion_tasks()["ConversionTasks"])
    sandbox_clock.advance(2 * 3600)
    code, _, err = run(
        capsys,
        [
            "import-instance",
            "--manifest-url",
            result.manifest_url,
            "-p",
            "Windows",
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 2
    assert "expired" in err and err.count("\n") == 1
    assert len(ec2.describe_conversion_tasks()["ConversionTasks"]) == before


def test_five_task_limit_is_said_plainly(
    sandbox: Any,
    bucket: str,
    workdir: Path,
    ec2: Any,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "60")  # tasks wait for their parts
    cancel_everything_active(ec2)
    ids = []
    try:
        for n in range(5):
            document = no_upload_volume(
                capsys, sandbox, workdir / "tiny.raw", bucket, "--prefix", f"limit{n}"
            )
            ids.append(document["task"]["id"])
        code, out, err = run(
            capsys,
            [
                "import-volume",
                str(workdir / "tiny.raw"),
                "-z",
                ZONE,
                "-b",
                bucket,
                "--prefix",
                "limit5",
                "--no-upload",
                *endpoint_flags(sandbox),
            ],
        )
        assert code == 1
        last = err.strip().splitlines()[-1]
        assert "you already have 5 active conversion tasks" in last
        assert "wait for one or cancel it with manifestkit cancel ID" in last
        # ... and since the manifest was already in S3, how to retry or clean up
        assert "manifestkit delete" in last
        code, out, _ = run(capsys, ["tasks", "--output", "json", *endpoint_flags(sandbox)])
        active = {t["id"] for t in json.loads(out)["tasks"] if t["state"] == "active"}
        assert set(ids) <= active
        for task in json.loads(out)["tasks"]:
            if task["id"] in ids:
                assert task["volume_ids"] == []  # no volume id while active
    finally:
        cancel_everything_active(ec2)


def test_no_upload_then_resume_completes_the_task(
    sandbox: Any,
    bucket: str,
    workdir: Path,
    ec2: Any,
    s3: Any,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "60")
    image = workdir / "tiny-dynamic.vhd"
    document = no_upload_volume(capsys, sandbox, image, bucket)
    task_id, url = document["task"]["id"], document["task"]["manifest_url"]
    assert document["next"].startswith("manifestkit resume ")
    keys = objects(s3, bucket)
    assert len(keys) == 1 and keys[0].endswith("tiny-dynamic.vhdmanifest.xml")  # parts pending
    assert describe(ec2, task_id)["State"] == "active"
    code, out, err = run(capsys, ["resume", url, str(image), *endpoint_flags(sandbox)])
    assert code == 0, err
    code, out, err = watch(capsys, sandbox, task_id)
    assert code == 0, err
    (task,) = json.loads(out)["tasks"]
    assert task["state"] == "completed" and task["bytes_converted"] == image.stat().st_size
    assert ec2.describe_volumes(VolumeIds=task["volume_ids"])["Volumes"]


def test_no_upload_names_no_url_on_stderr_and_its_resume_hint_completes_the_task(
    sandbox: Any, bucket: str, workdir: Path, ec2: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the presigned manifest URL is a bearer token: stdout (the result) only, never stderr
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "60")
    image = workdir / "tiny-dynamic.vhd"
    argv = ["import-volume", str(image), "-z", ZONE, "-b", bucket, "--no-upload"]
    code, out, err = run(capsys, [*argv, *endpoint_flags(sandbox)])
    assert code == 0, err
    assert "X-Amz-Signature" not in err and "X-Amz-Credential" not in err
    (hint,) = [line for line in err.splitlines() if "not uploaded yet" in line]
    command = hint.split("send them with: ", 1)[1].split(" (or ", 1)[0]
    words = shlex.split(command)
    assert words[:4] == ["manifestkit", "upload", str(image), "--resume"]
    task_id = next(line.split()[0] for line in out.splitlines() if line.startswith("import-vol-"))
    assert describe(ec2, task_id)["State"] == "active"
    code, _, err = run(capsys, [*words[1:], "--ec2-endpoint-url", sandbox.ec2_endpoint_url])
    assert code == 0, err
    task = final_state(ec2, task_id)
    assert task["State"] == "completed", task.get("StatusMessage")


def test_delete_refuses_while_a_task_reads_the_manifest(
    sandbox: Any,
    bucket: str,
    workdir: Path,
    ec2: Any,
    s3: Any,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "60")
    result = upload_raw(sandbox, bucket, workdir)
    missing = result.manifest_key.replace("manifest.xml", ".part1")
    s3.delete_object(Bucket=bucket, Key=missing)  # keeps the task active, waiting for it
    task_id = start_volume_import(capsys, sandbox, result.manifest_url)
    try:
        code, _, err = run(capsys, ["delete", result.manifest_url, *endpoint_flags(sandbox)])
        assert code == 2
        assert f"conversion task {task_id} is still importing from this manifest" in err
        assert s3.head_object(Bucket=bucket, Key=result.manifest_key)
    finally:
        ec2.cancel_conversion_task(ConversionTaskId=task_id)
    assert final_state(ec2, task_id)["State"] == "cancelled"
    code, out, err = run(capsys, ["delete", result.manifest_url, *endpoint_flags(sandbox)])
    assert code == 0, err
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    ("flags", "code_name"),
    [
        (["-O", "AKIAWRONGWRONGWRONG0", "-W", "nope"], "AuthFailure"),
        (["-O", "testing", "-W", "wrong-secret"], "SignatureDoesNotMatch"),
    ],
)
def test_refused_credentials_are_credentials_errors(
    flags: list[str], code_name: str, sandbox: Any, capsys: Any
) -> None:
    code, out, err = run(capsys, ["tasks", *flags, *endpoint_flags(sandbox)])
    assert code == 2
    # -W on the command line is warned about first (the process list shows it); then one error
    warning, error = err.splitlines()
    assert "-W/--aws-secret-key on the command line is visible" in warning
    assert error.startswith(
        "manifestkit: error: DescribeConversionTasks: EC2 refused the credentials"
    )
    assert code_name in error
    assert "nope" not in err and "wrong-secret" not in err
    assert out == ""


def test_task_expiry_while_waiting_for_parts_ends_the_watch_with_exit_1(
    sandbox: Any,
    bucket: str,
    workdir: Path,
    capsys: Any,
    sandbox_clock: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "60")
    task = no_upload_volume(capsys, sandbox, workdir / "tiny.raw", bucket)["task"]
    assert task["state"] == "active" and task["expiration_time"]
    sandbox_clock.advance(8 * 86400)  # the parts never came: EC2 gives up after about 7 days
    code, out, err = watch(capsys, sandbox, task["id"])
    assert code == 1
    (final,) = json.loads(out)["tasks"]
    assert final["state"] == "cancelled" and "expire" in final["status_message"].lower()
    assert "cancelled" in err and "expire" in err.lower()
