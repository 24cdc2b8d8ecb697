"""import-ami end to end on the sandbox: each importable format becomes an AMI with what was
asked for, and nothing of the way there (volume, parts, manifest) is left behind."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from tests.ami.conftest import (
    RUN_TAG,
    bucket_keys,
    client,
    images_named,
    tagged,
    tasks_for_bucket,
    volume_exists,
)


@pytest.mark.parametrize("kind", ["raw", "vmdk-stream", "vhd-dynamic"])
def test_image_becomes_ami_with_requested_attributes(
    kind: str,
    ami: Any,
    image_file: Any,
    name: str,
    sandbox: Any,
    ec2: Any,
    s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    image = image_file(kind)
    code, result, err = ami(
        image,
        name,
        "--architecture", "arm64",
        "--boot-mode", "uefi",
        "--ena-support",
        "--sriov-net-support", "simple",
        "--imds-support", "v2.0",
        "--tpm-support", "v2.0",
        "--root-device-name", "/dev/sda1",
        "--volume-type", "gp2",
        "--volume-size", "3",
        "--description", "made by a test",
        "--tag", "project=tests",
        "--tag", "os=none",
    )  # fmt: skip
    assert code == 0, err
    (found,) = images_named(ec2, name)
    assert found["ImageId"] == result["image_id"]
    assert found["State"] == "available"
    assert found["Architecture"] == "arm64"
    assert found["BootMode"] == "uefi"
    assert found["EnaSupport"] is True
    assert found["SriovNetSupport"] == "simple"
    assert found["ImdsSupport"] == "v2.0"
    assert found["TpmSupport"] == "v2.0"
    assert found["VirtualizationType"] == "hvm"
    assert found["RootDeviceName"] == "/dev/sda1"
    assert found["Description"] == "made by a test"
    tags = {t["Key"]: t["Value"] for t in found["Tags"]}
    assert tags["project"] == "tests" and tags["os"] == "none"
    assert tags[RUN_TAG] == result["run_id"]
    (mapping,) = found["BlockDeviceMappings"]
    assert mapping["DeviceName"] == "/dev/sda1"
    assert mapping["Ebs"]["SnapshotId"] == result["snapshot_id"]
    assert mapping["Ebs"]["VolumeSize"] == 3
    assert mapping["Ebs"]["VolumeType"] == "gp2"
    # the snapshot exists, complete, tagged like the AMI
    (snapshot,) = ec2.describe_snapshots(SnapshotIds=[result["snapshot_id"]])["Snapshots"]
    assert snapshot["State"] == "completed"
    snapshot_tags = {t["Key"]: t["Value"] for t in snapshot.get("Tags", [])}
    assert snapshot_tags["project"] == "tests" and snapshot_tags[RUN_TAG] == result["run_id"]
    # the volume was imported from this image: its size is the image's (1 GiB for these)
    size = os.path.getsize(image)
    assert snapshot["VolumeSize"] == max(1, math.ceil(size / 2**30))
    # the imported volume is gone, and so are the parts and the manifest
    assert result["volume_deleted"] is True and not volume_exists(ec2, result["volume_id"])
    assert bucket_keys(s3, bucket) == []
    (task,) = tasks_for_bucket(ec2, bucket)
    assert task["ConversionTaskId"] == result["import_task_id"]
    assert (
        task["ImportVolume"]["Image"]["Format"]
        == {"raw": "RAW", "vmdk-stream": "VMDK", "vhd-dynamic": "VHD"}[kind]
    )
    # the journal: 0600, says done, records every id
    journal = Path(result["journal"])
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    recorded = json.loads(journal.read_text())
    assert recorded["step"] == "done"
    assert recorded["image_id"] == result["image_id"]
    assert recorded["volume_id"] == result["volume_id"]
    assert recorded["manifest_url"] is None  # the bearer URL goes with the upload
    assert list(result["regions"]) == ["us-east-1"]


def test_defaults_first_zone_gp3_xvda_and_text_output(
    image_file: Any,
    name: str,
    sandbox: Any,
    ec2: Any,
    bucket: str,
    tmp_path: Path,
    capsys: Any,
) -> None:
    from manifestkit.cli import main
    from tests.ami.conftest import sandbox_flags

    image = image_file("raw")
    code = main(["import-ami", str(image), "--name", name, "-q",
                 *sandbox_flags(sandbox, bucket, tmp_path / "state")])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    (found,) = images_named(ec2, name)
    (mapping,) = found["BlockDeviceMappings"]
    assert found["RootDeviceName"] == mapping["DeviceName"] == "/dev/xvda"
    assert mapping["Ebs"]["VolumeType"] == "gp3"
    assert found["Architecture"] == "x86_64"
    first_zone = sorted(
        z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]
    )[0]
    (task,) = tasks_for_bucket(ec2, bucket)
    assert task["ImportVolume"]["AvailabilityZone"] == first_zone
    # text: AMI id, snapshot id, region
    assert out.split() == [found["ImageId"], mapping["Ebs"]["SnapshotId"], "us-east-1"]


def test_keep_upload_keeps_parts_and_manifest(
    ami: Any, image_file: Any, name: str, s3: Any, bucket: str, ec2: Any
) -> None:
    code, result, err = ami(image_file("vmdk-stream"), name, "--keep-upload")
    assert code == 0, err
    keys = bucket_keys(s3, bucket)
    assert any(k.endswith("manifest.xml") for k in keys) and any(".part" in k for k in keys)
    assert result["upload_deleted"] is False
    assert not volume_exists(ec2, result["volume_id"])


def test_copies_public_and_shared_in_every_region(
    ami: Any, image_file: Any, name: str, sandbox: Any, ec2: Any
) -> None:
    code, result, err = ami(
        image_file("raw"), name, "--boot-mode", "legacy-bios", "--ena-support",
        "--copy-to", "eu-west-1", "us-west-2", "--public", "--share-with", "111122223333",
    )  # fmt: skip
    assert code == 0, err
    assert sorted(result["regions"]) == ["eu-west-1", "us-east-1", "us-west-2"]
    ids = {result["regions"][r]["image_id"] for r in result["regions"]}
    assert len(ids) == 3  # each region has its own AMI
    for region, entry in result["regions"].items():
        regional = client(sandbox, region)
        (found,) = images_named(regional, name)
        assert found["ImageId"] == entry["image_id"]
        assert found["State"] == "available"
        assert found["BootMode"] == "legacy-bios" and found["EnaSupport"] is True
        (mapping,) = found["BlockDeviceMappings"]
        assert [mapping["Ebs"]["SnapshotId"]] == entry["snapshot_ids"]
        permissions = regional.describe_image_attribute(
            ImageId=entry["image_id"], Attribute="launchPermission"
        )["LaunchPermissions"]
        assert {"Group": "all"} in permissions and {"UserId": "111122223333"} in permissions
        assert found["Public"] is True
        for snapshot_id in entry["snapshot_ids"]:
            volume_permissions = regional.describe_snapshot_attribute(
                SnapshotId=snapshot_id, Attribute="createVolumePermission"
            )["CreateVolumePermissions"]
            assert {"Group": "all"} in volume_permissions
            assert {"UserId": "111122223333"} in volume_permissions
        tags = {t["Key"]: t["Value"] for t in found["Tags"]}
        assert tags[RUN_TAG] == result["run_id"]
    assert len(tagged(ec2, "snapshot", result["run_id"])) == 1


def test_local_runs_in_an_embedded_sandbox(tmp_path: Path, image_file: Any, capsys: Any) -> None:
    from manifestkit.cli import main

    image = image_file("raw")
    code = main(["--output", "json", "import-ami", str(image), "--name", "local one",
                 "--local", "--interval", "0.05", "-q"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert result["image_id"].startswith("ami-") and result["journal"] is None
    # --local leaves nothing beside the image: no journal, no upload record
    assert sorted(p.name for p in image.parent.iterdir()) == [image.name]


def test_a_non_importable_image_is_refused_first_and_convert_makes_it_an_ami(
    ami: Any, tmp_path: Path, name: str, ec2: Any, s3: Any, bucket: str
) -> None:
    import subprocess

    from tests.ami.conftest import SAMPLES

    sparse = tmp_path / "sparse.vmdk"  # monolithicSparse: EC2 refuses it
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(SAMPLES / "tiny.raw"),
                    str(sparse)], check=True, capture_output=True)  # fmt: skip
    code, _, err = ami(sparse, name)
    assert code == 2
    assert "EC2 cannot import this image" in err and "--convert" in err
    assert bucket_keys(s3, bucket) == [] and tasks_for_bucket(ec2, bucket) == []
    code, result, err = ami(sparse, name, "--convert")
    assert code == 0, err
    (task,) = tasks_for_bucket(ec2, bucket)
    assert task["ImportVolume"]["Image"]["Format"] == "VMDK"
    assert images_named(ec2, name)[0]["ImageId"] == result["image_id"]
    assert bucket_keys(s3, bucket) == []
