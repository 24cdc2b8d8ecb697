"""The sandbox's CreateSnapshot, RegisterImage and CopyImage, checked with plain boto3 against
what EC2 documents: states pass through ``pending``, RegisterImage keeps what it was given and
refuses what EC2 refuses, copies get their own snapshots, and the signature check still applies."""

from __future__ import annotations

import time
import uuid
from typing import Any

import boto3
import botocore.exceptions
import pytest


@pytest.fixture(autouse=True)
def short_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_SNAPSHOT_DELAY", "0.3")
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_IMAGE_DELAY", "0.3")
    for name in ("FAIL_SNAPSHOT", "FAIL_COPY", "DENY"):
        monkeypatch.delenv(f"MANIFESTKIT_SANDBOX_{name}", raising=False)


def _client(sandbox: Any, region: str, secret: str | None = None) -> Any:
    return boto3.client(
        "ec2",
        region_name=region,
        endpoint_url=sandbox.ec2_endpoint_url,
        aws_access_key_id=sandbox.access_key,
        aws_secret_access_key=secret or sandbox.secret_key,
    )


def _until(read: Any, want: str, timeout: float = 10) -> list[str]:
    """The states seen, polling until ``want`` (or the timeout)."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read()
        if not seen or seen[-1] != state:
            seen.append(state)
        if state == want or state == "error":
            break
        time.sleep(0.02)
    return seen


def _code(exc: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _snapshot(ec2: Any, size: int = 2) -> str:
    volume = ec2.create_volume(Size=size, AvailabilityZone="us-east-1a")["VolumeId"]
    answer = ec2.create_snapshot(
        VolumeId=volume,
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "k", "Value": "v"}]}],
    )
    assert answer["State"] == "pending" and answer["VolumeSize"] == size
    assert answer["Tags"] == [{"Key": "k", "Value": "v"}]
    states = _until(
        lambda: ec2.describe_snapshots(SnapshotIds=[answer["SnapshotId"]])["Snapshots"][0]["State"],
        "completed",
    )
    assert states == ["pending", "completed"]
    return str(answer["SnapshotId"])


def _name() -> str:
    return f"sandbox-test-{uuid.uuid4().hex[:12]}"


def _register(ec2: Any, name: str, snapshot: str, **more: Any) -> str:
    return str(
        ec2.register_image(
            Name=name,
            RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot, **more.pop("ebs", {})}}
            ],
            **more,
        )["ImageId"]
    )


def test_register_image_keeps_what_it_was_given(ec2: Any) -> None:
    snapshot = _snapshot(ec2)
    name = _name()
    image_id = ec2.register_image(
        Name=name,
        Architecture="arm64",
        BootMode="uefi-preferred",
        EnaSupport=True,
        SriovNetSupport="simple",
        ImdsSupport="v2.0",
        VirtualizationType="hvm",
        RootDeviceName="/dev/sda1",
        BlockDeviceMappings=[
            {
                "DeviceName": "/dev/sda1",
                "Ebs": {"SnapshotId": snapshot, "VolumeSize": 5, "VolumeType": "io2"},
            }
        ],
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "a", "Value": "b"}]}],
    )["ImageId"]
    describe = lambda: ec2.describe_images(ImageIds=[image_id])["Images"][0]  # noqa: E731
    assert _until(lambda: describe()["State"], "available") == ["pending", "available"]
    image = describe()
    assert (image["Name"], image["Architecture"], image["BootMode"]) == (name, "arm64",
                                                                      "uefi-preferred")  # fmt: skip
    assert image["EnaSupport"] is True and image["SriovNetSupport"] == "simple"
    assert image["ImdsSupport"] == "v2.0" and image["RootDeviceType"] == "ebs"
    assert image["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/sda1",
            "Ebs": {
                "SnapshotId": snapshot,
                "VolumeSize": 5,
                "VolumeType": "io2",
                "DeleteOnTermination": True,
                "Encrypted": False,
            },
        }
    ]
    assert image["Tags"] == [{"Key": "a", "Value": "b"}]
    attribute = ec2.describe_image_attribute(ImageId=image_id, Attribute="bootMode")
    assert attribute["BootMode"] == {"Value": "uefi-preferred"}
    # no invented volume or snapshot: the image uses the one it was given
    assert not [
        s for s in ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        if image_id in (s.get("Description") or "")
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"Name": "über-name"}, "InvalidAMIName.Malformed"),
        ({"Name": "bad#name"}, "InvalidAMIName.Malformed"),
        ({"TpmSupport": "v2.0"}, "InvalidParameterCombination"),
        ({"TpmSupport": "v2.0", "BootMode": "legacy-bios"}, "InvalidParameterCombination"),
        ({"ebs": {"VolumeSize": 1}}, "InvalidBlockDeviceMapping"),
        ({"RootDeviceName": "/dev/sdb"}, "InvalidBlockDeviceMapping"),
        ({"Architecture": "sparc"}, "InvalidParameterValue"),
        ({"DryRun": True}, "DryRunOperation"),
    ],
)
def test_register_image_refuses_as_ec2_does(ec2: Any, change: dict[str, Any], code: str) -> None:
    snapshot = _snapshot(ec2)
    params: dict[str, Any] = {"Name": _name(), "RootDeviceName": "/dev/xvda"}
    ebs = change.pop("ebs", {})
    params.update(change)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        ec2.register_image(
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot, **ebs}}
            ],
            **params,
        )
    assert _code(caught) == code


def test_a_name_is_unique_and_a_pending_snapshot_not_usable(ec2: Any) -> None:
    snapshot = _snapshot(ec2)
    name = _name()
    first = _register(ec2, name, snapshot)
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        _register(ec2, name, snapshot)
    assert _code(caught) == "InvalidAMIName.Duplicate" and first in str(caught.value)
    volume = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    pending = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        _register(ec2, _name(), pending)
    assert _code(caught) == "IncorrectState"


def test_copy_image_into_another_region_with_its_own_snapshot(sandbox: Any, ec2: Any) -> None:
    snapshot = _snapshot(ec2, size=3)
    name = _name()
    source = _register(ec2, name, snapshot, BootMode="uefi", EnaSupport=True)
    other = _client(sandbox, "eu-west-1")
    with pytest.raises(botocore.exceptions.ClientError) as caught:  # not available yet
        other.copy_image(SourceImageId=source, SourceRegion="us-east-1", Name=name)
    assert _code(caught) == "IncorrectState"
    _until(lambda: ec2.describe_images(ImageIds=[source])["Images"][0]["State"], "available")
    copy_id = other.copy_image(SourceImageId=source, SourceRegion="us-east-1", Name=name)["ImageId"]
    describe = lambda: other.describe_images(ImageIds=[copy_id])["Images"][0]  # noqa: E731
    assert _until(lambda: describe()["State"], "available") == ["pending", "available"]
    copy = describe()
    assert copy["BootMode"] == "uefi" and copy["EnaSupport"] is True
    (mapping,) = copy["BlockDeviceMappings"]
    copied_snapshot = mapping["Ebs"]["SnapshotId"]
    assert copied_snapshot != snapshot
    (found,) = other.describe_snapshots(SnapshotIds=[copied_snapshot])["Snapshots"]
    assert found["VolumeSize"] == 3 and found["State"] == "completed"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        ec2.describe_images(ImageIds=[copy_id])  # it lives in eu-west-1 only
    assert _code(caught) == "InvalidAMIID.NotFound"
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        other.copy_image(SourceImageId="ami-0000000000", SourceRegion="us-east-1", Name=_name())
    assert _code(caught) == "InvalidAMIID.NotFound"


def test_failure_and_deny_knobs(sandbox: Any, ec2: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = _snapshot(ec2)
    name = _name()
    source = _register(ec2, name, snapshot)
    _until(lambda: ec2.describe_images(ImageIds=[source])["Images"][0]["State"], "available")
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_FAIL_COPY", "us-west-2")
    other = _client(sandbox, "us-west-2")
    copy_id = other.copy_image(SourceImageId=source, SourceRegion="us-east-1", Name=name)["ImageId"]
    states = _until(lambda: other.describe_images(ImageIds=[copy_id])["Images"][0]["State"], "x")
    assert states == ["pending", "error"]
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_FAIL_SNAPSHOT", "1")
    volume = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    failing = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    states = _until(
        lambda: ec2.describe_snapshots(SnapshotIds=[failing])["Snapshots"][0]["State"], "x"
    )
    assert states == ["pending", "error"]
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_DENY", "RegisterImage,DeleteVolume")
    for call in (
        lambda: _register(ec2, _name(), snapshot),
        lambda: ec2.delete_volume(VolumeId=volume),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            call()
        assert _code(caught) == "UnauthorizedOperation"


def test_the_signature_is_still_checked(sandbox: Any, ec2: Any) -> None:
    snapshot = _snapshot(ec2)
    forged = _client(sandbox, "us-east-1", secret="not-the-secret")
    for call in (
        lambda: _register(forged, _name(), snapshot),
        lambda: forged.create_snapshot(VolumeId="vol-0"),
        lambda: forged.copy_image(SourceImageId="ami-0", SourceRegion="us-east-1", Name="abc"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as caught:
            call()
        assert _code(caught) == "SignatureDoesNotMatch"
