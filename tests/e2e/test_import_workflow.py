"""The library workflow end to end against the sandbox over real HTTP: upload, import, wait."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from manifestkit.ec2 import LaunchSpec, WaitSettings
from manifestkit.workflow import (
    ConversionTaskFailed,
    ImportInstanceRequest,
    ImportVolumeRequest,
    UploadRequest,
    import_instance,
    import_volume,
)

KINDS = ("vmdk-stream", "vhd-dynamic", "vhd-fixed", "raw")
ZONE = "us-east-1a"
FAST = WaitSettings(interval=0.05, timeout=60, volume_id_grace=5)


def _upload(
    workdir: Path, images: dict[str, Path], kind: str, bucket: str, **kw: Any
) -> UploadRequest:
    return UploadRequest(
        image=str(workdir / images[kind].name), bucket=bucket, part_size=8192, **kw
    )


@pytest.mark.parametrize("kind", KINDS)
def test_import_instance_reaches_completed_and_the_instance_exists(
    kind: str, sandbox: Any, bucket: str, workdir: Path, images: dict[str, Path], ec2: Any
) -> None:
    updates: list[str] = []
    request = ImportInstanceRequest(
        upload=_upload(workdir, images, kind, bucket),
        platform="Windows",
        launch=LaunchSpec(instance_type="m1.small", availability_zone=ZONE),
        description=f"e2e {kind}",
    )
    task = import_instance(
        request, sandbox.aws_settings(), wait=FAST, on_update=lambda t: updates.append(t.state)
    )
    assert task.state == "completed", task.status_message
    assert task.kind == "instance"
    assert task.image_bytes == images[kind].stat().st_size
    assert task.bytes_converted == task.image_bytes
    assert updates[0] == "active" and updates[-1] == "completed"
    reservations = ec2.describe_instances(InstanceIds=[task.instance_id])["Reservations"]
    assert [i["InstanceId"] for r in reservations for i in r["Instances"]] == [task.instance_id]
    assert task.volume_ids, "a completed task names its volume"
    volumes = ec2.describe_volumes(VolumeIds=list(task.volume_ids))["Volumes"]
    assert [v["VolumeId"] for v in volumes] == list(task.volume_ids)
    assert volumes[0]["Size"] == task.volume_gib


@pytest.mark.parametrize("kind", KINDS)
def test_import_volume_reaches_completed_and_the_volume_exists(
    kind: str, sandbox: Any, bucket: str, workdir: Path, images: dict[str, Path], ec2: Any
) -> None:
    request = ImportVolumeRequest(
        availability_zone=ZONE, upload=_upload(workdir, images, kind, bucket), volume_gib=2
    )
    task = import_volume(request, sandbox.aws_settings(), wait=FAST)
    assert task.state == "completed", task.status_message
    (volume,) = ec2.describe_volumes(VolumeIds=[task.volume_id])["Volumes"]
    assert volume["Size"] == 2
    assert volume["AvailabilityZone"] == ZONE


def test_cancelled_task_raises_with_the_status_message(
    sandbox: Any, bucket: str, workdir: Path, images: dict[str, Path], s3: Any
) -> None:
    # upload, then take a part away behind the importer's back: EC2 cancels naming it
    from manifestkit.workflow import upload_image

    result = upload_image(_upload(workdir, images, "raw", bucket), sandbox.aws_settings())
    part_key = result.manifest_key.replace("manifest.xml", ".part1")
    s3.delete_object(Bucket=bucket, Key=part_key)
    request = ImportVolumeRequest(availability_zone=ZONE, manifest_url=result.manifest_url)
    with pytest.raises(ConversionTaskFailed) as failure:
        import_volume(request, sandbox.aws_settings(), wait=FAST)
    task = failure.value.task
    assert task.state == "cancelled"
    assert "part" in task.status_message.lower() and "1" in task.status_message
    assert failure.value.exit_code == 1
