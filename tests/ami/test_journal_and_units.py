"""The journal as untrusted input, the test hook, and what needs no sandbox: region resolution
for --copy-to, and the RegisterImage request built from the options."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from manifestkit.ec2_images import ImageSpec, register_image_params
from manifestkit.errors import RemoteError, UsageError
from manifestkit.workflow.ami import checkpoint_from_env
from manifestkit.workflow.ami_journal import (
    CopyRecord,
    journal_path,
    new_journal,
    open_journal,
    read_journal,
    write_journal,
)


def test_round_trip_mode_0600_and_one_file_per_image_name_region(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(b"x")
    journal = new_journal(str(image), "my ami", "eu-west-1")
    journal = journal.with_copy(CopyRecord("us-east-1", "ami-0abc", ("snap-0123",), True, False))
    path = journal_path(str(image), "my ami", "eu-west-1", None)
    assert path.parent == tmp_path
    write_journal(path, journal)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_journal(path) == journal
    others = {
        journal_path(str(image), "my ami", "us-east-1", None),
        journal_path(str(image), "other", "eu-west-1", None),
        journal_path(str(image), "my ami", "eu-west-1", str(tmp_path / "state")),
    }
    assert path not in others and len(others) == 3


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("volume_id", "vol-../../x", "volume_id"),
        ("image_id", "ami-XYZ; rm", "image_id"),
        ("task_id", 7, "task_id has the wrong type"),
        ("volume_gib", True, "volume_gib has the wrong type"),
        ("step", "teleport", "unknown step"),
        ("copies", [{"region": "us-east-1"}], "copy record"),
        (
            "copies",
            [
                {
                    "region": "../x",
                    "image_id": None,
                    "snapshot_ids": [],
                    "available": False,
                    "shared": False,
                }
            ],
            "copy region",
        ),  # fmt: skip
        ("extra", 1, "unexpected or missing fields"),
        ("version", 2, "not version 1"),
    ],
)
def test_a_bad_journal_is_refused_naming_what(
    tmp_path: Path, field: str, value: Any, says: str
) -> None:
    path = tmp_path / "j.json"
    data = new_journal(str(tmp_path / "d"), "name", "us-east-1").to_dict()
    data[field] = value
    path.write_text(json.dumps(data))
    with pytest.raises(UsageError) as caught:
        read_journal(path)
    assert says in str(caught.value) and caught.value.exit_code == 2


def test_a_huge_or_foreign_journal_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "d.raw"
    image.write_bytes(b"x")
    path = journal_path(str(image), "name", "us-east-1", None)
    path.write_bytes(b" " * (2 << 20))
    with pytest.raises(UsageError, match="larger than"):
        open_journal(str(image), "name", "us-east-1", None, record=True)
    path.write_bytes(b"[" * 100_000)  # nested beyond the parser's recursion limit
    with pytest.raises(UsageError, match="not JSON"):
        open_journal(str(image), "name", "us-east-1", None, record=True)
    write_journal(path, new_journal(str(tmp_path / "other.raw"), "name", "us-east-1"))
    with pytest.raises(UsageError, match="another image, name or region"):
        open_journal(str(image), "name", "us-east-1", None, record=True)


def test_checkpoint_hook() -> None:
    checkpoint_from_env({})("register")  # no hook: nothing happens
    stop = checkpoint_from_env({"MANIFESTKIT_AMI_TEST_STOP": "register:fail"})
    stop("snapshot")
    with pytest.raises(RemoteError, match="forced failure at register"):
        stop("register")
    with pytest.raises(KeyboardInterrupt):
        checkpoint_from_env({"MANIFESTKIT_AMI_TEST_STOP": "copy:interrupt"})("copy")
    with pytest.raises(UsageError):
        checkpoint_from_env({"MANIFESTKIT_AMI_TEST_STOP": "nowhere:kill"})


def test_register_image_request_uses_ec2_names() -> None:
    spec = ImageSpec(name="x86 thing", snapshot_id="snap-1", volume_gib=8, boot_mode="uefi",
                     ena_support=True, tpm_support="v2.0", tags=(("k", "v"),))  # fmt: skip
    params = register_image_params(spec)
    assert params["VirtualizationType"] == "hvm" and params["RootDeviceName"] == "/dev/xvda"
    assert params["BlockDeviceMappings"] == [
        {
            "DeviceName": "/dev/xvda",
            "Ebs": {"SnapshotId": "snap-1", "VolumeSize": 8, "VolumeType": "gp3",
                    "DeleteOnTermination": True},
        }
    ]  # fmt: skip
    assert params["TpmSupport"] == "v2.0" and params["EnaSupport"] is True
    assert {t["ResourceType"] for t in params["TagSpecifications"]} == {"image", "snapshot"}
    # the botocore model accepts every key (parameter validation is botocore's own)
    import botocore.session
    from botocore.validate import validate_parameters

    model = botocore.session.get_session().get_service_model("ec2")
    validate_parameters(params, model.operation_model("RegisterImage").input_shape)


def test_copy_to_all_is_every_enabled_region_but_home(sandbox: Any, tmp_path: Path) -> None:
    import boto3

    from manifestkit.ec2 import WaitSettings
    from manifestkit.progress import NoProgress
    from manifestkit.workflow.ami import AmiRequest, _AmiRun
    from manifestkit.workflow.upload import UploadRequest

    image = tmp_path / "d.raw"
    image.write_bytes(b"\0" * 512)
    request = AmiRequest(upload=UploadRequest(image=str(image), bucket="some-bucket"),
                         name="all regions", copy_to=("all",), record_journal=False)  # fmt: skip
    run = _AmiRun(request, sandbox.aws_settings(), WaitSettings(), NoProgress(), print,
                  lambda step: None)  # fmt: skip
    regions = run._resolve_regions()
    answer = boto3.client(
        "ec2", region_name="us-east-1", endpoint_url=sandbox.ec2_endpoint_url,
        aws_access_key_id=sandbox.access_key, aws_secret_access_key=sandbox.secret_key,
    ).describe_regions(AllRegions=True)["Regions"]  # fmt: skip
    enabled = {r["RegionName"] for r in answer if r["OptInStatus"] != "not-opted-in"}
    assert set(regions) == enabled - {"us-east-1"}
    assert "ap-east-1" not in regions and "eu-west-1" in regions
