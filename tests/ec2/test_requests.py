"""ImportInstance/ImportVolume requests as they go on the wire (botocore serialises, we capture)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
from botocore.awsrequest import AWSResponse

from manifestkit import ec2
from manifestkit.errors import UsageError

URL = "https://b.s3.us-east-1.amazonaws.com/p/u/disk.vmdkmanifest.xml?X-Amz-Signature=abc"

INSTANCE_ANSWER = b"""<ImportInstanceResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
<requestId>r</requestId><conversionTask><conversionTaskId>import-i-ffvko9js</conversionTaskId>
<expirationTime>2010-12-22T12:01Z</expirationTime><importInstance><volumes><item>
<bytesConverted>0</bytesConverted><availabilityZone>us-east-1a</availabilityZone>
<image><format>VMDK</format><size>1179593728</size><importManifestUrl>u</importManifestUrl></image>
<description/><volume><size>12</size><id/></volume><status>active</status><statusMessage/></item>
</volumes><instanceId>i-1234567890abcdef0</instanceId><description/></importInstance>
<state>active</state></conversionTask></ImportInstanceResponse>"""

VOLUME_ANSWER = b"""<ImportVolumeResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">
<requestId>r</requestId><conversionTask><conversionTaskId>import-vol-1</conversionTaskId>
<expirationTime>2030-01-01T00:00:00Z</expirationTime><importVolume><bytesConverted>0</bytesConverted>
<availabilityZone>us-east-1b</availabilityZone><image><format>RAW</format><size>4096</size>
<importManifestUrl>u</importManifestUrl></image><volume><size>3</size></volume></importVolume>
<state>active</state></conversionTask></ImportVolumeResponse>"""


class Capture:
    """A before-send hook: records the serialised request and answers with canned XML."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.body = body
        self.status = status
        self.sent: dict[str, list[str]] = {}

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        raw = request.body if isinstance(request.body, bytes) else request.body.encode()
        self.sent = parse_qs(raw.decode(), keep_blank_values=True)
        return _response(request.url, self.status, self.body)


def _response(url: str, status: int, body: bytes) -> AWSResponse:
    class _Raw:
        def stream(self, **_: Any):
            yield body

    response = AWSResponse(url, status, {"content-type": "text/xml"}, _Raw())
    response._content = body  # botocore reads .content for non-streaming answers
    return response


def _client(capture: Capture):
    client = boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.meta.events.register("before-send.ec2.*", capture)
    return client


def _disk(**kw: Any) -> ec2.DiskImageSpec:
    base = {"format": "VMDK", "file_bytes": 1179593728, "manifest_url": URL, "volume_gib": 12}
    base.update(kw)
    return ec2.DiskImageSpec(**base)


def test_import_instance_wire_format_carries_every_launch_field() -> None:
    capture = Capture(INSTANCE_ANSWER)
    user_data = b"#!/bin/sh\necho \xe2\x9c\x93 hello\n"
    spec = ec2.InstanceImportSpec(
        disk=_disk(),
        platform="Windows",
        description="my vm",
        launch=ec2.LaunchSpec(
            architecture="x86_64",
            instance_type="m1.xlarge",
            group_names=("web", "ssh"),
            group_ids=("sg-1",),
            subnet_id="subnet-9",
            private_ip_address="10.0.0.5",
            availability_zone="us-east-1a",
            monitoring=True,
            shutdown_behavior="terminate",
            user_data=user_data,
            additional_info="extra",
        ),
    )
    task = ec2.import_instance(_client(capture), spec)
    sent = {k: v[0] for k, v in capture.sent.items()}
    assert sent["Action"] == "ImportInstance"
    assert sent["Platform"] == "Windows"
    assert sent["Description"] == "my vm"
    assert sent["DiskImage.1.Image.Format"] == "VMDK"
    assert sent["DiskImage.1.Image.Bytes"] == "1179593728"
    assert sent["DiskImage.1.Image.ImportManifestUrl"] == URL
    assert sent["DiskImage.1.Volume.Size"] == "12"
    assert sent["LaunchSpecification.Architecture"] == "x86_64"
    assert sent["LaunchSpecification.InstanceType"] == "m1.xlarge"
    assert sent["LaunchSpecification.GroupName.1"] == "web"
    assert sent["LaunchSpecification.GroupName.2"] == "ssh"
    assert sent["LaunchSpecification.GroupId.1"] == "sg-1"
    assert sent["LaunchSpecification.SubnetId"] == "subnet-9"
    assert sent["LaunchSpecification.PrivateIpAddress"] == "10.0.0.5"
    assert sent["LaunchSpecification.Placement.AvailabilityZone"] == "us-east-1a"
    assert sent["LaunchSpecification.Monitoring"] == "true"
    assert sent["LaunchSpecification.InstanceInitiatedShutdownBehavior"] == "terminate"
    assert sent["LaunchSpecification.AdditionalInfo"] == "extra"
    # the API wants base64 and botocore does not encode ImportInstance's UserData: exactly once
    assert base64.b64decode(sent["LaunchSpecification.UserData.Data"], validate=True) == user_data
    assert "DryRun" not in sent

    assert task.id == "import-i-ffvko9js"
    assert task.kind == "instance"
    assert task.state == "active"
    assert task.instance_id == "i-1234567890abcdef0"
    assert task.volume_ids == ()  # empty id while active: the documented quirk
    assert task.image_bytes == 1179593728
    assert task.volume_gib == 12
    assert task.expires_at is not None and task.expires_at.year == 2010


def test_unknown_instance_type_and_platform_pass_through_unchanged() -> None:
    capture = Capture(INSTANCE_ANSWER)
    spec = ec2.InstanceImportSpec(
        disk=_disk(), platform="Plan9", launch=ec2.LaunchSpec(instance_type="zz9.plural")
    )
    ec2.import_instance(_client(capture), spec)
    assert capture.sent["Platform"] == ["Plan9"]
    assert capture.sent["LaunchSpecification.InstanceType"] == ["zz9.plural"]
    assert not any(k.startswith("LaunchSpecification.UserData") for k in capture.sent)


def test_import_volume_wire_format() -> None:
    capture = Capture(VOLUME_ANSWER)
    spec = ec2.VolumeImportSpec(
        disk=_disk(format="RAW", file_bytes=4096, volume_gib=3),
        availability_zone="us-east-1b",
        description="data",
    )
    task = ec2.import_volume(_client(capture), spec)
    sent = {k: v[0] for k, v in capture.sent.items()}
    assert sent["Action"] == "ImportVolume"
    assert sent["AvailabilityZone"] == "us-east-1b"
    assert sent["Image.Format"] == "RAW"
    assert sent["Image.Bytes"] == "4096"
    assert sent["Image.ImportManifestUrl"] == URL
    assert sent["Volume.Size"] == "3"
    assert sent["Description"] == "data"
    assert task.kind == "volume" and task.id == "import-vol-1" and task.volume_ids == ()
    assert task.availability_zone == "us-east-1b"


def test_dry_run_sends_dryrun_and_reads_the_answer() -> None:
    allowed = Capture(
        b"<Response><Errors><Error><Code>DryRunOperation</Code><Message>Request would have "
        b"succeeded</Message></Error></Errors><RequestID>x</RequestID></Response>",
        status=412,
    )
    spec = ec2.VolumeImportSpec(disk=_disk(), availability_zone="us-east-1a")
    assert ec2.dry_run_import_volume(_client(allowed), spec) is True
    assert allowed.sent["DryRun"] == ["true"]
    denied = Capture(
        b"<Response><Errors><Error><Code>UnauthorizedOperation</Code><Message>no</Message>"
        b"</Error></Errors><RequestID>x</RequestID></Response>",
        status=403,
    )
    assert (
        ec2.dry_run_import_instance(_client(denied), ec2.InstanceImportSpec(disk=_disk())) is False
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"format": "QCOW2"}, "not one EC2 imports"),
        ({"file_bytes": 0}, "must be positive"),
        ({"volume_gib": 0}, "at least 1"),
        ({"manifest_url": ""}, "no manifest URL"),
    ],
)
def test_bad_disk_specs_are_usage_errors(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        _disk(**kwargs)


def test_volume_import_needs_a_zone_and_shutdown_behaviour_is_checked() -> None:
    with pytest.raises(UsageError, match="availability zone"):
        ec2.VolumeImportSpec(disk=_disk(), availability_zone="")
    with pytest.raises(UsageError, match="stop or terminate"):
        ec2.LaunchSpec(shutdown_behavior="explode")
