"""Bad input is refused before anything is uploaded; a failed step removes what the run made
(unless --keep-on-failure), and the one-line error says what was removed or kept."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.ami.conftest import (
    bucket_keys,
    client,
    images_named,
    tagged,
    tasks_for_bucket,
    volume_exists,
)


def _journal(tmp_path: Path) -> dict[str, Any]:
    (path,) = (tmp_path / "state").glob("*.manifestkit-ami.json")
    return json.loads(path.read_text())


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("manifestkit: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("bad_name", "says"),
    [("ab", "3 to 128"), ("x" * 129, "3 to 128"), ("my#ami", "'#'"), ("dürer ami", "'ü'")],
)
def test_a_name_ec2_would_refuse(
    bad_name: str, says: str, ami: Any, image_file: Any, ec2: Any, s3: Any, bucket: str
) -> None:
    code, _, err = ami(image_file("raw"), bad_name)
    assert code == 2
    assert says in _one_error_line(err)
    assert bucket_keys(s3, bucket) == [] and tasks_for_bucket(ec2, bucket) == []


def _register_directly(ec2: Any, name: str) -> str:
    volume = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a")["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    while ec2.describe_snapshots(SnapshotIds=[snapshot])["Snapshots"][0]["State"] != "completed":
        time.sleep(0.05)
    return ec2.register_image(
        Name=name,
        RootDeviceName="/dev/xvda",
        BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snapshot}}],
    )["ImageId"]


def test_a_name_already_taken_names_the_existing_ami(
    ami: Any, image_file: Any, name: str, ec2: Any, s3: Any, bucket: str, tmp_path: Path
) -> None:
    existing = _register_directly(ec2, name)
    code, _, err = ami(image_file("raw"), name)
    assert code == 2
    line = _one_error_line(err)
    assert f"already taken in us-east-1 by {existing}" in line
    assert bucket_keys(s3, bucket) == [] and tasks_for_bucket(ec2, bucket) == []
    assert not list((tmp_path / "state").glob("*"))  # no journal for a run that never started
    assert [i["ImageId"] for i in images_named(ec2, name)] == [existing]


def test_a_name_taken_in_a_copy_region_is_refused_first(
    ami: Any, image_file: Any, name: str, sandbox: Any, ec2: Any, s3: Any, bucket: str
) -> None:
    existing = _register_directly(client(sandbox, "us-west-2"), name)
    code, _, err = ami(image_file("raw"), name, "--copy-to", "us-west-2")
    assert code == 2
    assert f"taken in us-west-2 by {existing}" in _one_error_line(err)
    assert bucket_keys(s3, bucket) == [] and images_named(ec2, name) == []


def test_tpm_support_without_uefi(ami: Any, image_file: Any, name: str) -> None:
    for boot in ([], ["--boot-mode", "legacy-bios"]):
        code, _, err = ami(image_file("raw"), name, "--tpm-support", "v2.0", *boot)
        assert code == 2
        assert "--tpm-support v2.0 needs --boot-mode uefi" in _one_error_line(err)


@pytest.mark.parametrize(
    ("region", "says"),
    [
        ("xx-nowhere-1", "no such region"),
        ("ap-east-1", "the region is not enabled for this account"),
    ],
)
def test_copy_to_a_region_that_is_not_there(
    region: str, says: str, ami: Any, image_file: Any, name: str, ec2: Any, s3: Any, bucket: str
) -> None:
    code, _, err = ami(image_file("raw"), name, "--copy-to", region)
    assert code == 2
    assert f"--copy-to {region}: {says}" in _one_error_line(err)
    assert bucket_keys(s3, bucket) == [] and tasks_for_bucket(ec2, bucket) == []


def test_bad_tag_and_account(ami: Any, image_file: Any, name: str) -> None:
    code, _, err = ami(image_file("raw"), name, "--tag", "novalue")
    assert code == 2 and "KEY=VALUE" in _one_error_line(err)
    code, _, err = ami(image_file("raw"), name, "--tag", "aws:x=1")
    assert code == 2 and "reserves 'aws:'" in _one_error_line(err)
    code, _, err = ami(image_file("raw"), name, "--share-with", "12345")
    assert code == 2 and "not an AWS account id" in _one_error_line(err)


def _nothing_left(ec2: Any, s3: Any, bucket: str, name: str, run_id: str) -> None:
    assert images_named(ec2, name) == []
    assert tagged(ec2, "snapshot", run_id) == []
    assert tagged(ec2, "volume", run_id) == []
    assert bucket_keys(s3, bucket) == []


def test_forced_failure_at_register_leaves_nothing_behind(
    ami: Any,
    image_file: Any,
    name: str,
    ec2: Any,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_AMI_TEST_STOP", "register:fail")
    code, _, err = ami(image_file("vhd-dynamic"), name)
    assert code == 1
    line = _one_error_line(err)
    journal = _journal(tmp_path)
    assert "forced failure at register" in line and "removed snap-" in line and "vol-" in line
    (task,) = tasks_for_bucket(ec2, bucket)
    volume_id = task["ImportVolume"]["Volume"]["Id"]
    assert not volume_exists(ec2, volume_id)
    _nothing_left(ec2, s3, bucket, name, journal["run_id"])
    # the journal starts over: the next run makes a new upload, import, snapshot and AMI
    assert journal["step"] == "start" and journal["snapshot_id"] is None
    assert any(r.startswith("snap-") for r in journal["removed"])


def test_snapshot_ending_in_error(
    ami: Any,
    image_file: Any,
    name: str,
    ec2: Any,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_FAIL_SNAPSHOT", "1")
    code, _, err = ami(image_file("raw"), name)
    assert code == 1
    line = _one_error_line(err)
    assert "ended in error" in line and "removed snap-" in line
    _nothing_left(ec2, s3, bucket, name, _journal(tmp_path)["run_id"])


def test_a_copy_ending_in_error_keeps_the_ami_then_continues(
    ami: Any,
    image_file: Any,
    name: str,
    sandbox: Any,
    ec2: Any,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_FAIL_COPY", "us-west-2")
    code, _, err = ami(image_file("raw"), name, "--copy-to", "eu-west-1", "us-west-2")
    assert code == 1
    line = _one_error_line(err)
    assert "in us-west-2 ended error" in line
    (home,) = images_named(ec2, name)
    assert f"kept {home['ImageId']}" in line or home["ImageId"] in line.split("kept", 1)[1]
    assert images_named(client(sandbox, "us-west-2"), name) == []  # the failed copy is gone
    assert len(images_named(client(sandbox, "eu-west-1"), name)) == 1
    assert bucket_keys(s3, bucket) == []  # the upload is not needed any more
    monkeypatch.delenv("MANIFESTKIT_SANDBOX_FAIL_COPY")
    code, result, err = ami(image_file("raw"), name, "--copy-to", "eu-west-1", "us-west-2")
    assert code == 0, err
    assert result["image_id"] == home["ImageId"]
    for region in ("eu-west-1", "us-west-2"):
        (copy,) = images_named(client(sandbox, region), name)
        assert copy["ImageId"] == result["regions"][region]["image_id"]
    assert len(tasks_for_bucket(ec2, bucket)) == 1


def test_credentials_that_may_import_but_not_register(
    ami: Any,
    image_file: Any,
    name: str,
    ec2: Any,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_DENY", "RegisterImage")
    code, _, err = ami(image_file("raw"), name)
    assert code == 2
    line = _one_error_line(err)
    assert "RegisterImage: these credentials are not allowed" in line
    assert "ec2:RegisterImage" in line and "removed snap-" in line
    _nothing_left(ec2, s3, bucket, name, _journal(tmp_path)["run_id"])


def test_keep_on_failure_keeps_and_says_how_to_remove_then_continues(
    ami: Any,
    image_file: Any,
    name: str,
    ec2: Any,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_DENY", "RegisterImage")
    code, _, err = ami(image_file("raw"), name, "--keep-on-failure")
    assert code == 2
    line = _one_error_line(err)
    journal = _journal(tmp_path)
    snapshot_id, volume_id = journal["snapshot_id"], journal["volume_id"]
    assert f"kept {snapshot_id}, {volume_id}" in line
    assert f"aws ec2 delete-snapshot --region us-east-1 --snapshot-id {snapshot_id}" in line
    assert f"aws ec2 delete-volume --region us-east-1 --volume-id {volume_id}" in line
    assert "manifestkit delete URL" in line and "run the same command again" in line
    assert volume_exists(ec2, volume_id)
    assert ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    assert bucket_keys(s3, bucket) != []
    monkeypatch.delenv("MANIFESTKIT_SANDBOX_DENY")
    code, result, err = ami(image_file("raw"), name)
    assert code == 0, err
    assert result["snapshot_id"] == snapshot_id and result["volume_id"] == volume_id
    assert [s["SnapshotId"] for s in tagged(ec2, "snapshot", result["run_id"])] == [snapshot_id]
    assert not volume_exists(ec2, volume_id) and bucket_keys(s3, bucket) == []


def test_a_tampered_journal_is_refused(
    ami: Any, image_file: Any, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANIFESTKIT_AMI_TEST_STOP", "snapshot:interrupt")
    assert ami(image_file("raw"), name)[0] == 130
    (path,) = (tmp_path / "state").glob("*.manifestkit-ami.json")
    journal = json.loads(path.read_text())
    journal["volume_id"] = "vol-../../etc"
    path.write_text(json.dumps(journal))
    monkeypatch.delenv("MANIFESTKIT_AMI_TEST_STOP")
    code, _, err = ami(image_file("raw"), name)
    assert code == 2
    assert "not a manifestkit import-ami journal (volume_id" in _one_error_line(err)


def test_a_volume_size_smaller_than_the_image_is_refused_first(
    ami: Any, tmp_path: Path, name: str, ec2: Any, s3: Any, bucket: str
) -> None:
    image = tmp_path / "big.raw"
    with open(image, "wb") as out:
        out.truncate((1 << 30) + 512)  # sparse: a volume of 2 GiB holds it, 1 GiB does not
    code, _, err = ami(image, name, "--volume-size", "1")
    assert code == 2
    line = _one_error_line(err)
    assert "--volume-size 1 GiB is smaller than the volume" in line and "(2 GiB)" in line
    assert bucket_keys(s3, bucket) == [] and tasks_for_bucket(ec2, bucket) == []
