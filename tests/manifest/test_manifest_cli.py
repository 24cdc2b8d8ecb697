"""``manifestkit manifest`` (offline) and ``manifestkit validate`` through the real entry point."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import stat
import subprocess
from pathlib import Path
from unittest import mock
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials

from manifestkit.cli import main
from manifestkit.manifest import read_manifest, validate_manifest
from manifestkit.s3.presign import parse_presigned_url, signed_method

from .conftest import XXE_DOC, build, mutate

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
TEST_CREDS = ReadOnlyCredentials("testing", "testing", None)  # conftest's throwaway keys


def botocore_signed(operation: str, url: str, key: str) -> str:
    """The URL botocore's own signer makes for ``operation`` on ``key`` with conftest's keys, at
    the instant, endpoint, region and expiry ``url`` states (the independent oracle)."""
    split = urlsplit(url)
    query = dict(parse_qsl(split.query))
    region = query["X-Amz-Credential"].split("/")[2]
    client = boto3.client(
        "s3",
        region_name=region,
        endpoint_url=f"{split.scheme}://{split.netloc}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    signed_at = dt.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=signed_at):
        return client.generate_presigned_url(
            operation,
            Params={"Bucket": split.path.split("/")[1], "Key": key},
            ExpiresIn=int(query["X-Amz-Expires"]),
        )


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    attempts: list[object] = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"network call to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: refuse(None, address))
    yield attempts
    assert attempts == []


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "disk.raw"
    path.write_bytes(os.urandom(25 * 1024 + 7))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_manifest_offline_writes_0600_file(tmp_path, image, capsys, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys,
        "manifest",
        str(image),
        "--bucket",
        "my-bucket",
        "--prefix",
        "imports/",
        "--part-size",
        "10KiB",
        "--s3-endpoint-url",
        "http://10.255.255.1:9",
        "--region",
        "eu-west-1",
    )
    assert code == 0, err
    target = tmp_path / "disk.rawmanifest.xml"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert "wrote disk.rawmanifest.xml: 3 parts" in out
    header, parts = read_manifest(target)
    assert (header.size, header.volume_size, header.file_format) == (25 * 1024 + 7, 1, "RAW")
    assert [p.end for p in parts] == [10239, 20479, 25 * 1024 + 6]
    assert parts[0].key.startswith("imports/") and parts[0].key.endswith("/disk.raw.part0")
    info = parse_presigned_url(parts[0].get_url)
    assert info.host == "10.255.255.1:9" and info.region == "eu-west-1"
    assert signed_method(info, "testing") == "GET"
    assert parts[0].get_url == botocore_signed("get_object", parts[0].get_url, parts[0].key)
    assert validate_manifest(target, credentials=TEST_CREDS) == []


def test_manifest_regional_aws_endpoint_json(tmp_path, image, capsys, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(
        capsys,
        "manifest",
        str(image),
        "--bucket",
        "my-bucket",
        "--output",
        "json",
        "--output-file",
        "m.xml",
        "--expires",
        "2.5",
    )
    assert code == 0, err
    doc = json.loads(out)  # exactly one JSON document
    assert doc["manifest"] == str(tmp_path / "m.xml")
    assert doc["part_count"] == 1 and doc["bucket"] == "my-bucket"
    assert doc["manifest_key"].endswith("/disk.rawmanifest.xml")
    assert doc["region"] == "us-east-1"
    header, parts = read_manifest(tmp_path / "m.xml")
    assert parts[0].head_url.startswith("https://my-bucket.s3.us-east-1.amazonaws.com/")
    info = parse_presigned_url(header.self_destruct_url)
    assert info.expires_in == 216000 and info.key == doc["manifest_key"]


def test_manifest_to_stdout(image, capsys, no_network):
    code, out, err = run(
        capsys, "manifest", str(image), "--bucket", "my-bucket", "--output-file", "-"
    )
    assert code == 0, err
    assert out.startswith('<?xml version="1.0" encoding="UTF-8"?>\n<manifest>')
    assert read_manifest(out.encode())[0].part_count == 1


def test_manifest_vmdk_sample_volume_from_capacity(tmp_path, capsys, no_network):
    sample = SAMPLES / "tiny-stream.vmdk"
    if not sample.exists():
        pytest.skip("samples/tiny-stream.vmdk not built")
    code, out, err = run(
        capsys,
        "manifest",
        str(sample),
        "--bucket",
        "my-bucket",
        "--output-file",
        str(tmp_path / "m.xml"),
        "--volume-size",
        "3",
        "--output",
        "json",
    )
    assert code == 0, err
    header, _ = read_manifest(tmp_path / "m.xml")
    assert header.file_format == "VMDK" and header.volume_size == 3
    assert header.size == sample.stat().st_size


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--bucket", "Bad_Bucket"], "invalid bucket name 'Bad_Bucket'"),
        (["--bucket", "ab"], "3 to 63 characters"),
        (["--bucket", "192.168.1.1"], "IP address"),
        (["--bucket", "xn--abc"], "reserved prefix"),
        (["--bucket", "my-bucket", "--part-size", "0"], "part size 0 (0 B) is out of range"),
        (["--bucket", "my-bucket", "--part-size", "6GiB"], "out of range"),
        (["--bucket", "my-bucket", "--part-size", "ten"], "invalid size"),
        (["--bucket", "my-bucket", "--expires", "8"], "more than 0 and at most 7 days"),
        (["--bucket", "my-bucket", "--expires", "0"], "more than 0 and at most 7 days"),
        (["--bucket", "my-bucket", "--expires", "soon"], "is not a number of days"),
        (["--bucket", "my-bucket", "--volume-size", "0"], "volume size 0 GiB is invalid"),
        (["--bucket", "my-bucket", "--format", "VHD"], "--format VHD"),
        (["--bucket", "my-bucket", "--output-file", "-", "--output", "json"], "both want stdout"),
    ],
)
def test_manifest_bad_input(tmp_path, image, capsys, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "manifest", str(image), *args)
    assert code == 2
    assert words in err
    assert err.startswith("manifestkit: error: ") and err.count("\n") == 1
    assert not (tmp_path / "disk.rawmanifest.xml").exists()


def test_part_size_too_small_for_image(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    big = tmp_path / "big.raw"
    with open(big, "wb") as f:
        f.truncate(2 * 1024**3)
    code, _, err = run(capsys, "manifest", str(big), "--bucket", "my-bucket", "--part-size", "1K")
    # the range that works for this 2 GiB image: at most 1,000,000 parts of at most 5 GiB
    assert code == 2 and "gives 2097152 parts" in err
    assert "give a --part-size between 2.1 KiB and 5.0 GiB" in err


def test_volume_below_capacity_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    img = tmp_path / "big.raw"
    with open(img, "wb") as f:
        f.truncate(1024**3 + 512)
    code, _, err = run(capsys, "manifest", str(img), "--bucket", "my-bucket", "--volume-size", "1")
    assert code == 2 and "too small: 2 GiB needed" in err


def test_existing_output_not_overwritten(tmp_path, image, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "disk.rawmanifest.xml").write_text("keep me")
    code, _, err = run(capsys, "manifest", str(image), "--bucket", "my-bucket")
    assert code == 2 and "already exists" in err
    assert (tmp_path / "disk.rawmanifest.xml").read_text() == "keep me"
    code, _, err = run(capsys, "manifest", str(image), "--bucket", "my-bucket", "--force")
    assert code == 0, err
    code, _, err = run(
        capsys,
        "manifest",
        str(image),
        "--bucket",
        "my-bucket",
        "--output-file",
        str(image),
        "--force",
    )
    assert code == 2 and "is the image itself" in err


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_output_path_that_cannot_be_the_manifest(tmp_path, image, capsys, monkeypatch, force):
    """A missing folder, a folder, or a pipe as -o is bad input (exit 2, one line naming it),
    never an 'unexpected' error, and --force does not replace a folder or a pipe."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "pipe")
    for target, words in (
        ("nope/m.xml", "the folder"),
        ("disk.raw/m.xml", "disk.raw is not a folder"),
        ("folder", "folder: is a folder"),
        ("pipe", "pipe: is not a regular file"),
    ):
        code, _, err = run(
            capsys, "manifest", str(image), "--bucket", "my-bucket", "--output-file", target, *force
        )
        assert code == 2, err
        assert err.startswith("manifestkit: error: ") and err.count("\n") == 1
        assert words in err and "unexpected" not in err
    assert (tmp_path / "folder").is_dir() and stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.raw", "folder", "pipe"]


def test_unwritable_output_folder(tmp_path, image, capsys, monkeypatch):
    """A folder the user cannot write to (as root it cannot be made one: mkstemp refuses here)."""
    monkeypatch.chdir(tmp_path)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("manifestkit.files.tempfile.mkstemp", refuse)
    code, _, err = run(
        capsys, "manifest", str(image), "--bucket", "my-bucket", "--output-file", "m.xml"
    )
    assert code == 2 and err.count("\n") == 1
    assert "m.xml: cannot write the manifest: Permission denied" in err


def test_no_credentials(tmp_path, image, capsys, monkeypatch, no_network, no_aws_credentials):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "manifest", str(image), "--bucket", "my-bucket")
    assert code == 2 and "no AWS credentials found" in err
    assert not (tmp_path / "disk.rawmanifest.xml").exists()


def test_missing_image(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "manifest", str(tmp_path / "nope.vmdk"), "--bucket", "my-bucket")
    assert code == 2 and "nope.vmdk" in err


@pytest.mark.skipif(not shutil.which("qemu-img"), reason="needs qemu-img")
def test_non_importable_image_refused_unless_dont_verify(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    vmdk = tmp_path / "sparse.vmdk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(vmdk), "64M"], check=True)
    code, _, err = run(capsys, "manifest", str(vmdk), "--bucket", "my-bucket")
    assert code == 2 and "cannot be imported" in err and "--dont-verify-format" in err
    assert err.count("convert it") == 1, err  # the problem's own fix, not repeated after it
    code, _, err = run(
        capsys, "manifest", str(vmdk), "--bucket", "my-bucket", "--dont-verify-format"
    )
    assert code == 0, err
    assert "writing the manifest anyway" in err
    header, _ = read_manifest(tmp_path / "sparse.vmdkmanifest.xml")
    assert header.file_format == "VMDK" and header.volume_size == 1

    qcow = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "64M"], check=True)
    code, _, err = run(capsys, "manifest", str(qcow), "--bucket", "my-bucket")
    assert code == 2 and err.count("\n") == 1


# -- validate --------------------------------------------------------------------------------


def test_validate_fresh_manifest_with_signatures(tmp_path, image, capsys, monkeypatch, no_network):
    monkeypatch.chdir(tmp_path)
    assert (
        run(capsys, "manifest", str(image), "--bucket", "my-bucket", "--output-file", "m.xml")[0]
        == 0
    )
    code, out, err = run(capsys, "validate", "m.xml", "--verify-signatures")
    assert (code, out, err) == (0, "m.xml: valid\n", "")
    code, out, _ = run(capsys, "validate", "m.xml", "--output", "json")
    doc = json.loads(out)
    assert code == 0 and doc["valid"] is True and doc["errors"] == 0
    assert [p["rule"] for p in doc["problems"]] == ["method-unverified"]
    # the note says how to verify them: the user may well have credentials, just not the flag
    assert "--verify-signatures" in doc["problems"][0]["message"]
    code, out, _ = run(capsys, "validate", "m.xml", "--image", str(image))
    assert code == 0, out
    other = tmp_path / "other.raw"
    other.write_bytes(b"\1" * (image.stat().st_size + 512))
    code, out, _ = run(capsys, "validate", "m.xml", "--image", str(other))
    assert code == 2 and "[image-size]" in out
    assert f"the image file is {other.stat().st_size} bytes" in out


def test_validate_invalid_lists_each_problem(tmp_path, capsys):
    def breaks(root):
        root.find("import/parts").set("count", "9")
        root.findall("import/parts/part")[1].find("byte-range").set("start", "5")

    path = tmp_path / "bad.xml"
    path.write_bytes(mutate(build(1000, 300), breaks))
    code, out, err = run(capsys, "validate", str(path))
    assert code == 2
    lines = [line for line in out.splitlines() if ": error: " in line]
    assert any("/manifest/import/parts/@count" in line and "[count]" in line for line in lines)
    assert any("part[2]/byte-range" in line and "[range-contiguous]" in line for line in lines)
    code, out, _ = run(capsys, "validate", str(path), "--output", "json")
    assert code == 2 and json.loads(out)["valid"] is False
    assert {"count", "range-contiguous"} <= {p["rule"] for p in json.loads(out)["problems"]}


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"not xml", "not well-formed XML"),
        (b"<html/>", "not a VM Import Manifest"),
        (None, "DOCTYPE"),
    ],
)
def test_validate_bad_files(tmp_path, capsys, content, words):
    path = tmp_path / "x.xml"
    path.write_bytes(XXE_DOC if content is None else content)
    code, out, err = run(capsys, "validate", str(path))
    assert code == 2 and words in err and err.count("\n") == 1 and out == ""


def test_validate_missing_file(capsys):
    code, _, err = run(capsys, "validate", "/nonexistent/m.xml")
    assert code == 2 and "cannot read manifest /nonexistent/m.xml" in err
