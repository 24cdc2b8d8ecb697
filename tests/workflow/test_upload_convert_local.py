"""``upload --convert`` (a converted temporary copy, removed afterwards) and ``upload --local``."""

from __future__ import annotations

import glob
import json
import shutil
import subprocess
import tempfile

import pytest

from manifestkit.manifest import read_manifest

from .helpers import (
    MiB,
    assert_same_disk,
    download_parts,
    fetch_manifest,
    random_image,
    run_cli,
)

needs_qemu = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


def _temp_folders() -> set[str]:
    return set(glob.glob(f"{tempfile.gettempdir()}/manifestkit-convert-*"))


@needs_qemu
def test_convert_uploads_an_importable_copy(s3server, bucket, tmp_path):
    raw = random_image(tmp_path / "disk.raw", 3 * MiB, seed=31)
    sparse_vmdk = tmp_path / "disk.vmdk"  # monolithicSparse: EC2 refuses it
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(sparse_vmdk)], check=True
    )
    code, out, err = run_cli(
        "upload", str(sparse_vmdk), "--bucket", bucket, "-q", *s3server.cli_args()
    )
    assert code == 2 and "--convert" in err
    before = _temp_folders()
    code, out, err = run_cli(
        "upload",
        str(sparse_vmdk),
        "--bucket",
        bucket,
        "--convert",
        "--part-size",
        "64K",
        "--output",
        "json",
        *s3server.cli_args(),
    )
    assert code == 0, err
    assert "converted" in err  # the user is told
    doc = json.loads(out)
    assert doc["converted"] and doc["file_format"] == "VMDK"
    assert _temp_folders() == before  # the temporary copy is gone
    uploaded, _ = download_parts(doc["manifest_url"], tmp_path)
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(uploaded)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    assert info["format"] == "vmdk" and info["format-specific"]["data"]["create-type"] == (
        "streamOptimized"
    )
    assert_same_disk(uploaded, raw, "raw")


@needs_qemu
def test_resume_of_a_converted_upload_converts_again_without_being_told(s3server, bucket, tmp_path):
    # the parts sent are of the converted copy; resumed without --convert, the image's own size
    # differed from the recorded one and the upload was refused as "the image changed"
    raw = random_image(tmp_path / "disk.raw", 2 * MiB, seed=32)
    sparse_vmdk = tmp_path / "disk.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(sparse_vmdk)], check=True
    )
    first = ["upload", str(sparse_vmdk), "--bucket", bucket, "--part-size", "64K"]
    code, out, err = run_cli(*first, "--convert", "--output", "json", *s3server.cli_args())
    assert code == 0, err
    doc = json.loads(out)
    s3 = s3server.client()
    _, parts = read_manifest(str(fetch_manifest(doc["manifest_url"], tmp_path / "m.xml")))
    for part in parts[1:3]:  # as if the upload had been interrupted before these
        s3.delete_object(Bucket=bucket, Key=part.key)
    code, out, err = run_cli(
        "upload", str(sparse_vmdk), "--resume", "--output", "json", *s3server.cli_args()
    )
    assert code == 0, err
    assert "converted copy" in err
    again = json.loads(out)
    assert again["converted"] and again["upload_id"] == doc["upload_id"]
    assert again["put"] >= 2 and again["kept"] >= 1
    uploaded, _ = download_parts(again["manifest_url"], tmp_path)
    assert_same_disk(uploaded, raw, "raw")


def test_local_sandbox_creates_the_bucket(tmp_path):
    image = random_image(tmp_path / "local.raw", MiB + 3)
    code, out, err = run_cli(
        "upload", str(image), "--bucket", "local-bucket", "--local", "--output", "json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["parts"] == 1 and doc["put"] == 1
    assert doc["state_file"] is None and list(tmp_path.iterdir()) == [image]


@pytest.mark.parametrize(
    "command",
    [
        ["upload", "--bucket", "local-bucket"],
        ["import-volume", "-z", "us-east-1a"],
        ["import-instance", "-p", "Windows"],
    ],
)
def test_local_writes_no_state_file_even_with_state_dir(tmp_path, command):
    """--local is a throwaway sandbox: no command leaves an upload record, wherever asked."""
    image = random_image(tmp_path / "local.raw", MiB)
    states = tmp_path / "states"
    code, out, err = run_cli(
        command[0],
        str(image),
        *command[1:],
        "--local",
        "--state-dir",
        str(states),
        "-q",
        "--output",
        "json",
    )
    assert code == 0, err
    json.loads(out)  # one JSON document, nothing else on stdout
    assert list(tmp_path.iterdir()) == [image] and not states.exists()
