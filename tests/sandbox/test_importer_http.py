"""The sandbox import endpoint over real HTTP on 127.0.0.1, driven by unmodified boto3 clients.

Images are uploaded with plain ``put_object``, the manifest written by ``manifestkit.manifest``;
the oracles are botocore's own parsing of the answers, moto's DescribeInstances/DescribeVolumes,
and ``qemu-img`` for the images made here.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

from manifestkit.manifest import build_manifest_file
from manifestkit.parts import PartPlan
from manifestkit.s3.presign import Presigner
from manifestkit.sizes import GiB

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
REGION = "us-east-1"
ZONE = "us-east-1a"


# The sandbox, s3, ec2, bucket and sandbox_clock fixtures come from tests/conftest.py (a session
# sandbox: S3 + EC2 + this import endpoint on 127.0.0.1, behind SigV4 checks).


def unvalidated_ec2(sandbox: Any) -> Any:
    """An EC2 client that lets bad requests through (botocore checks required members itself)."""
    return boto3.client(
        "ec2",
        region_name=REGION,
        endpoint_url=sandbox.endpoint_url,
        config=Config(parameter_validation=False),
    )


@pytest.fixture(autouse=True)
def quick_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_POLL_INTERVAL", "0.05")
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "1")
    monkeypatch.delenv("MANIFESTKIT_SANDBOX_PART_DELAY", raising=False)


# -- uploading an image the way the uploader does ------------------------------------------------


@dataclass(frozen=True)
class Upload:
    path: Path
    plan: PartPlan
    manifest_url: str
    file_bytes: int
    capacity_bytes: int


def qemu_capacity(path: Path) -> int:
    import json

    out = subprocess.run(
        ["qemu-img", "info", "--output=json", str(path)], check=True, capture_output=True
    ).stdout
    return int(json.loads(out)["virtual-size"])


def upload(
    s3: Any,
    sandbox: Any,
    bucket: str,
    path: Path,
    tmp_path: Path,
    *,
    file_format: str,
    part_size: int = 16 * 1024,
    skip_parts: tuple[int, ...] = (),
    grow_part: int | None = None,
    expires_in: int = 3600,
) -> Upload:
    file_bytes = path.stat().st_size
    plan = PartPlan.for_file(path, file_bytes, part_size=part_size, prefix="imports")
    with open(path, "rb") as image:
        for part in plan:
            if part.index in skip_parts:
                continue
            image.seek(part.start)
            data = image.read(part.size)
            if part.index == grow_part:
                data += b"\0"
            s3.put_object(Bucket=bucket, Key=part.key, Body=data)
    creds = boto3.Session().get_credentials().get_frozen_credentials()
    presigner = Presigner(
        creds,
        REGION,
        endpoint_url=sandbox.endpoint_url,
        expires_in=expires_in,
        now=sandbox.clock.now(),
    )
    capacity = qemu_capacity(path)
    manifest = tmp_path / f"{path.name}-{uuid.uuid4().hex[:6]}manifest.xml"
    build_manifest_file(
        manifest,
        plan=plan,
        file_format=file_format,
        bucket=bucket,
        presigner=presigner,
        volume_gib=max(1, -(-capacity // GiB)),
        capacity_bytes=capacity,
    )
    s3.put_object(Bucket=bucket, Key=plan.manifest_key, Body=manifest.read_bytes())
    return Upload(
        path=path,
        plan=plan,
        manifest_url=presigner.url("GET", bucket, plan.manifest_key),
        file_bytes=file_bytes,
        capacity_bytes=capacity,
    )


def image_of(up: Upload, fmt: str, volume_gib: int = 1) -> dict:
    return {
        "Image": {"Format": fmt, "Bytes": up.file_bytes, "ImportManifestUrl": up.manifest_url},
        "Volume": {"Size": volume_gib},
    }


def start_instance_import(ec2: Any, up: Upload, fmt: str, **extra: Any) -> dict:
    kwargs: dict[str, Any] = {
        "Platform": "Windows",
        "Description": "test import",
        "DiskImages": [{**image_of(up, fmt), "Description": "root disk"}],
        "LaunchSpecification": {
            "InstanceType": "m1.small",
            "Architecture": "x86_64",
            "Placement": {"AvailabilityZone": ZONE},
        },
    }
    kwargs.update(extra)
    return ec2.import_instance(**kwargs)["ConversionTask"]


def describe(ec2: Any, task_id: str) -> dict:
    (task,) = ec2.describe_conversion_tasks(ConversionTaskIds=[task_id])["ConversionTasks"]
    return task


def wait_final(ec2: Any, task_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = describe(ec2, task_id)
        if task["State"] in ("completed", "cancelled"):
            return task
        if time.monotonic() > deadline:
            raise AssertionError(f"task {task_id} still {task['State']}: {task}")
        time.sleep(0.05)


def error_code(call: Any) -> tuple[str, str, int]:
    with pytest.raises(botocore.exceptions.ClientError) as info:
        call()
    err = info.value.response
    return err["Error"]["Code"], err["Error"]["Message"], err["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def raw_image(tmp_path: Path) -> Path:
    path = tmp_path / "disk.raw"
    shutil.copyfile(SAMPLES / "tiny.raw", path)
    return path


# -- happy paths --------------------------------------------------------------------------------


def test_import_instance_completes_and_the_instance_and_volume_exist(
    sandbox: Any, s3: Any, ec2: Any, bucket: str, tmp_path: Path
) -> None:
    up = upload(s3, sandbox, bucket, SAMPLES / "tiny-stream.vmdk", tmp_path, file_format="VMDK")
    created = sandbox.clock.now()
    launch = {
        "InstanceType": "m3.medium",
        "Architecture": "x86_64",
        "GroupNames": ["default"],
        "Placement": {"AvailabilityZone": ZONE},
        "InstanceInitiatedShutdownBehavior": "terminate",
    }
    task = start_instance_import(ec2, up, "VMDK", LaunchSpecification=launch)
    assert task["State"] == "active"
    assert task["ConversionTaskId"].startswith("import-i-")
    expires = dt.datetime.strptime(task["ExpirationTime"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.timezone.utc
    )
    assert abs((expires - created) - dt.timedelta(days=7)) < dt.timedelta(seconds=5)
    details = task["ImportInstance"]
    instance_id = details["InstanceId"]
    assert instance_id.startswith("i-")
    (volume,) = details["Volumes"]
    assert volume["Volume"]["Id"] == ""  # EC2 shows no volume id while the task is active
    assert volume["Image"] == {
        "Format": "VMDK",
        "Size": up.file_bytes,
        "ImportManifestUrl": up.manifest_url,
    }
    assert volume["AvailabilityZone"] == ZONE and volume["Description"] == "root disk"
    # the instance exists from the start, stopped
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    assert reservation["Instances"][0]["State"]["Name"] == "stopped"

    final = wait_final(ec2, task["ConversionTaskId"])
    assert (final["State"], final["StatusMessage"]) == ("completed", "")
    (volume,) = final["ImportInstance"]["Volumes"]
    assert volume["BytesConverted"] == up.file_bytes
    volume_id = volume["Volume"]["Id"]
    assert volume_id.startswith("vol-")
    (vol,) = ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"]
    assert (vol["Size"], vol["AvailabilityZone"]) == (1, ZONE)
    assert vol["Attachments"][0]["InstanceId"] == instance_id
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert [m["Ebs"]["VolumeId"] for m in instance["BlockDeviceMappings"]] == [volume_id]
    assert instance["Platform"] == "windows" and instance["Placement"]["AvailabilityZone"] == ZONE
    assert instance["InstanceType"] == "m3.medium"
    assert [g["GroupName"] for g in instance["SecurityGroups"]] == ["default"]


@pytest.mark.parametrize(("sample", "fmt"), [("tiny-dynamic.vhd", "VHD"), ("tiny.raw", "RAW")])
def test_import_volume_completes_and_the_volume_exists(
    sandbox: Any, s3: Any, ec2: Any, bucket: str, tmp_path: Path, sample: str, fmt: str
) -> None:
    up = upload(s3, sandbox, bucket, SAMPLES / sample, tmp_path, file_format=fmt, part_size=1024)
    task = ec2.import_volume(AvailabilityZone=ZONE, Description="data", **image_of(up, fmt))[
        "ConversionTask"
    ]
    assert task["ConversionTaskId"].startswith("import-vol-") and task["State"] == "active"
    final = wait_final(ec2, task["ConversionTaskId"])
    assert (final["State"], final["StatusMessage"]) == ("completed", "")
    details = final["ImportVolume"]
    assert details["BytesConverted"] == up.file_bytes
    assert details["Description"] == "data"
    (vol,) = ec2.describe_volumes(VolumeIds=[details["Volume"]["Id"]])["Volumes"]
    assert (vol["Size"], vol["AvailabilityZone"], vol["State"]) == (1, ZONE, "available")
    assert up.capacity_bytes <= vol["Size"] * GiB


def test_describe_lists_tasks_and_filters_by_id(
    sandbox: Any, s3: Any, ec2: Any, bucket: str, raw_image: Path, tmp_path: Path
) -> None:
    up = upload(s3, sandbox, bucket, raw_image, tmp_path, file_format="RAW")
    a = ec2.import_volume(AvailabilityZone=ZONE, **image_of(up, "RAW"))["ConversionTask"]
    b = ec2.import_volume(AvailabilityZone=ZONE, **image_of(up, "RAW"))["ConversionTask"]
    ids = {t["ConversionTaskId"] for t in ec2.describe_conversion_tasks()["ConversionTasks"]}
    assert {a["ConversionTaskId"], b["ConversionTaskId"]} <= ids
    only = ec2.describe_conversion_tasks(ConversionTaskIds=[b["ConversionTaskId"]])
    assert [t["ConversionTaskId"] for t in only["ConversionTasks"]] == [b["ConversionTaskId"]]
    for task in (a, b):
        assert wait_final(ec2, task["ConversionTaskId"])["State"] == "completed"


# -- request errors -----------------------------------------------------------------------------


def test_dry_run_answers_dry_run_operation_and_creates_nothing(
    sandbox: Any, ec2: Any, raw_image: Path
) -> None:
    before = ec2.describe_conversion_tasks()["ConversionTasks"]
    image = {
        "Image": {"Format": "RAW", "Bytes": 32768, "ImportManifestUrl": "http://127.0.0.1:1/m"},
        "Volume": {"Size": 1},
    }
    for call in (
        lambda: ec2.import_volume(DryRun=True, AvailabilityZone=ZONE, **image),
        lambda: ec2.import_instance(DryRun=True, Platform="Windows", DiskImages=[image]),
    ):
        code, message, status = error_code(call)
        assert (code, status) == ("DryRunOperation", 412)
        assert message == "Request would have succeeded, but DryRun flag is set."
    assert ec2.describe_conversion_tasks()["ConversionTasks"] == before


_IMAGE = {"Format": "VMDK", "Bytes": 2 * GiB, "ImportManifestUrl": "http://127.0.0.1:1/m"}
_DISKS = [{"Image": _IMAGE, "Volume": {"Size": 2}}]


@pytest.mark.parametrize(
    ("operation", "params", "code", "mention"),
    [
        ("import_instance", {"DiskImages": _DISKS}, "MissingParameter", "Platform"),
        (
            "import_instance",
            {
                "Platform": "Windows",
                "DiskImages": [{"Image": {**_IMAGE, "Format": "QCOW2"}, "Volume": {"Size": 2}}],
            },
            "InvalidParameterValue",
            "QCOW2",
        ),
        (
            "import_instance",
            {"Platform": "Windows", "DiskImages": [{"Image": _IMAGE, "Volume": {"Size": 1}}]},
            "InvalidParameter",
            "Volume.Size",
        ),
        (
            "import_instance",
            {
                "Platform": "Windows",
                "DiskImages": _DISKS,
                "LaunchSpecification": {"InstanceType": "m9.enormous"},
            },
            "InvalidParameterValue",
            "m9.enormous",
        ),
        (
            "import_instance",
            {
                "Platform": "Windows",
                "DiskImages": _DISKS,
                "LaunchSpecification": {"GroupNames": ["no-such-group"]},
            },
            "InvalidGroup.NotFound",
            "no-such-group",
        ),
        (
            "import_instance",
            {
                "Platform": "Windows",
                "DiskImages": _DISKS,
                "LaunchSpecification": {"SubnetId": "subnet-00000000"},
            },
            "InvalidSubnetID.NotFound",
            "subnet-00000000",
        ),
        (
            "import_volume",
            {"Image": _IMAGE, "Volume": {"Size": 2}},
            "MissingParameter",
            "AvailabilityZone",
        ),
        (
            "import_volume",
            {"AvailabilityZone": "eu-west-1a", "Image": _IMAGE, "Volume": {"Size": 2}},
            "InvalidParameterValue",
            "eu-west-1a",
        ),
        (
            "describe_conversion_tasks",
            {"ConversionTaskIds": ["import-i-00000000"]},
            "InvalidConversionTaskId",
            "import-i-00000000",
        ),
        (
            "describe_conversion_tasks",
            {"ConversionTaskIds": ["i-1234"]},
            "InvalidConversionTaskId.Malformed",
            "i-1234",
        ),
        (
            "cancel_conversion_task",
            {"ConversionTaskId": "import-vol-00000000"},
            "InvalidConversionTaskId",
            "import-vol-00000000",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_request_errors_have_ec2_codes(
    sandbox: Any, operation: str, params: dict[str, Any], code: str, mention: str
) -> None:
    raw = unvalidated_ec2(sandbox)
    got_code, message, status = error_code(lambda: getattr(raw, operation)(**params))
    assert (got_code, status) == (code, 400), message
    assert mention in message


# -- broken uploads end cancelled, saying why ----------------------------------------------------


def test_missing_part_cancels_after_the_wait_naming_the_part(
    sandbox: Any, s3: Any, ec2: Any, bucket: str, raw_image: Path, tmp_path: Path
) -> None:
    up = upload(s3, sandbox, bucket, raw_image, tmp_path, file_format="RAW", skip_parts=(1,))
    task = ec2.import_volume(AvailabilityZone=ZONE, **image_of(up, "RAW"))["ConversionTask"]
    time.sleep(0.3)
    assert describe(ec2, task["ConversionTaskId"])["State"] == "active"  # still waiting
    final = wait_final(ec2, task["ConversionTaskId"])
    assert final["State"] == "cancelled"
    assert "Part 1" in final["StatusMessage"] and up.plan.part(1).key in final["StatusMessage"]
    assert "not found" in final["StatusMessage"]


def test_part_that_arrives_late_is_waited_for(
    sandbox: Any,
    s3: Any,
    ec2: Any,
    bucket: str,
    raw_image: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "20")
    up = upload(s3, sandbox, bucket, raw_image, tmp_path, file_format="RAW", skip_parts=(0,))
    task = ec2.import_volume(AvailabilityZone=ZONE, **image_of(up, "RAW"))["ConversionTask"]
    time.sleep(0.3)
    assert describe(ec2, task["ConversionTaskId"])["State"] == "active"
    part = up.plan.part(0)
    s3.put_object(Bucket=bucket, Key=part.key, Body=raw_image.read_bytes()[: part.size])
    assert wait_final(ec2, task["ConversionTaskId"])["State"] == "completed"


def test_part_of_the_wrong_size_cancels_naming_the_part(
    sandbox: Any, s3: Any, ec2: Any, bucket: str, raw_image: Path, tmp_path: Path
) -> None:
    up = upload(s3, sandbox, bucket, raw_image, tmp_path, file_format="RAW", grow_part=1)
    task = ec2.import_volume(AvailabilityZone=ZONE, **image_of(up, "RAW"))["ConversionTask"]
    final = wait_final(ec2, task["ConversionTaskId"])
    assert final["State"] == "cancelled"
    assert "Part 1: size mismatch" in final["StatusMessage"]


def test_manifest_that_is_not_there_cancels(sandbox: Any, ec2: Any, bucket: str, s3: Any) -> None:
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "nothing/heremanifest.xml"}
    )
    image = {
        "Image": {"Format": "RAW", "Bytes": 10, "ImportManifestUrl": url},
        "Volume": {"Size": 1},
    }
    task = ec2.import_volume(AvailabilityZone=ZONE, **image)["ConversionTask"]
    final = wait_final(ec2, task["ConversionTaskId"])
    assert final["State"] == "cancelled" and "Manifest file not found" in final["StatusMessage"]


def test_expired_manifest_url_cancels_with_s3s_reason(
    sandbox: Any,
    s3: Any,
    ec2: Any,
    bucket: str,
    raw_image: Path,
    tmp_path: Path,
    sandbox_clock: Any,
) -> None:
    up = upload(s3, sandbox, bucket, raw_image, tmp_path, file_format="RAW", expires_in=60)
    sandbox_clock.advance(120)
    task = ec2.import_volume(AvailabilityZone=ZONE, **image_of(up, "RAW"))["ConversionTask"]
    final = wait_final(ec2, task["ConversionTaskId"])
    assert final["State"] == "cancelled"
    assert "Manifest file could not be retrieved" in final["StatusMessage"]
    assert "Request has expired" in final["StatusMessage"]


def test_expired_part_urls_cancel_naming_the_part(
    sandbox: Any,
    s3: Any,
    ec2: Any,
    bucket: str,
    raw_image: Path,
    tmp_path: Path,
    sandbox_clock: Any,
) -> None:
    up = upload(s3, sandbox, bucket, raw_image, tmp_path, file_format="RAW", expires_in=60)
    creds = boto3.Session().get_credentials().get_frozen_credentials()
    # the manifest itself stays readable; the part URLs inside it expire
    long_lived = Presigner(creds, REGION, endpoint_url=sandbox.endpoint_url, expires_in=3600)
    manifest_url = long_lived.url("GET", bucket, up.plan.manifest_key)
    image = image_of(up, "RAW")
    image["Image"]["ImportManifestUrl"] = manifest_url
    sandbox_clock.advance(120)
    task = ec2.import_volume(AvailabilityZone=ZONE, **image)["ConversionTask"]
    final = wait_final(ec2, task["ConversionTaskId"])
    assert final["State"] == "cancelled"
    assert "Part 0" in final["StatusMessage"] and "Request has expired" in final["StatusMessage"]


def test_monolithic_sparse_vmdk_is_refused_like_aws(
    sandbox: Any, s3: Any, ec2: Any, bucket: str, tmp_path: Path
) -> None:
    sparse = tmp_path / "sparse.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(SAMPLES / "tiny.raw"), str(sparse)],
        check=True,
    )
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(sparse)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "monolithicSparse" in info  # the oracle says what we made
    up = upload(s3, sandbox, bucket, sparse, tmp_path, file_format="VMDK")
    task = start_instance_import(ec2, up, "VMDK")
    final = wait_final(ec2, task["ConversionTaskId"])
    assert final["State"] == "cancelled"
    assert "File uses unsupported compression algorithm 0" in final["StatusMessage"]
    # the cancelled import leaves no instance behind (it is terminated)
    instance_id = final["ImportInstance"]["InstanceId"]
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert instance["State"]["Name"] == "terminated"


def test_format_declared_wrong_is_refused(
    sandbox: Any, s3: Any, ec2: Any, bucket: str, tmp_path: Path
) -> None:
    up = upload(s3, sandbox, bucket, SAMPLES / "tiny-dynamic.vhd", tmp_path, file_format="VHD")
    image = image_of(up, "VHD")
    image["Image"]["Format"] = "RAW"
    task = ec2.import_volume(AvailabilityZone=ZONE, **image)["ConversionTask"]
    final = wait_final(ec2, task["ConversionTaskId"])
    assert final["State"] == "cancelled" and "file-format (VHD)" in final["StatusMessage"]


# -- cancelling, limits, expiry ------------------------------------------------------------------


def test_cancel_mid_transfer(
    sandbox: Any,
    s3: Any,
    ec2: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_DELAY", "0.3")
    up = upload(
        s3,
        sandbox,
        bucket,
        SAMPLES / "tiny-stream.vmdk",
        tmp_path,
        file_format="VMDK",
        part_size=8 * 1024,
    )
    task = start_instance_import(ec2, up, "VMDK")
    task_id = task["ConversionTaskId"]
    deadline = time.monotonic() + 10
    while describe(ec2, task_id)["ImportInstance"]["Volumes"][0]["BytesConverted"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    ec2.cancel_conversion_task(ConversionTaskId=task_id, ReasonMessage="wrong image")
    mid = describe(ec2, task_id)
    assert mid["State"] in ("cancelling", "cancelled")
    final = wait_final(ec2, task_id)
    assert (final["State"], final["StatusMessage"]) == ("cancelled", "wrong image")
    converted = final["ImportInstance"]["Volumes"][0]["BytesConverted"]
    assert 0 < converted < up.file_bytes
    code, _, _ = error_code(lambda: ec2.cancel_conversion_task(ConversionTaskId=task_id))
    assert code == "IncorrectState"


def test_cancelling_a_completed_task_is_refused(
    sandbox: Any, s3: Any, ec2: Any, bucket: str, raw_image: Path, tmp_path: Path
) -> None:
    up = upload(s3, sandbox, bucket, raw_image, tmp_path, file_format="RAW")
    task = ec2.import_volume(AvailabilityZone=ZONE, **image_of(up, "RAW"))["ConversionTask"]
    assert wait_final(ec2, task["ConversionTaskId"])["State"] == "completed"
    code, message, status = error_code(
        lambda: ec2.cancel_conversion_task(ConversionTaskId=task["ConversionTaskId"])
    )
    assert (code, status) == ("IncorrectState", 400) and "completed" in message


def test_sixth_active_task_is_refused(
    sandbox: Any, ec2: Any, bucket: str, s3: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "60")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "later/diskmanifest.xml"}
    )
    image = {
        "Image": {"Format": "RAW", "Bytes": 10, "ImportManifestUrl": url},
        "Volume": {"Size": 1},
    }
    open_before = sum(
        t["State"] in ("active", "cancelling")
        for t in ec2.describe_conversion_tasks()["ConversionTasks"]
    )
    started = [
        ec2.import_volume(AvailabilityZone=ZONE, **image)["ConversionTask"]["ConversionTaskId"]
        for _ in range(5 - open_before)
    ]
    try:
        code, message, status = error_code(
            lambda: ec2.import_volume(AvailabilityZone=ZONE, **image)
        )
        assert (code, status) == ("ResourceLimitExceeded", 400) and "5" in message
    finally:
        for task_id in started:
            ec2.cancel_conversion_task(ConversionTaskId=task_id)
    for task_id in started:
        assert wait_final(ec2, task_id)["State"] == "cancelled"
    # a slot is free again
    task = ec2.import_volume(AvailabilityZone=ZONE, **image)["ConversionTask"]
    ec2.cancel_conversion_task(ConversionTaskId=task["ConversionTaskId"])


def test_task_still_waiting_at_its_expiration_time_is_cancelled(
    sandbox: Any,
    ec2: Any,
    bucket: str,
    s3: Any,
    monkeypatch: pytest.MonkeyPatch,
    sandbox_clock: Any,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "60")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": "never/diskmanifest.xml"}
    )
    image = {
        "Image": {"Format": "RAW", "Bytes": 10, "ImportManifestUrl": url},
        "Volume": {"Size": 1},
    }
    task = ec2.import_volume(AvailabilityZone=ZONE, **image)["ConversionTask"]
    time.sleep(0.2)
    assert describe(ec2, task["ConversionTaskId"])["State"] == "active"
    sandbox_clock.advance(7 * 24 * 3600 + 1)
    final = wait_final(ec2, task["ConversionTaskId"])
    assert final["State"] == "cancelled" and "expired" in final["StatusMessage"]
