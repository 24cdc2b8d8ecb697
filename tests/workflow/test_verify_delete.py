"""``manifestkit verify`` and ``manifestkit delete`` against uploads on the S3 server."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from manifestkit.errors import UsageError
from manifestkit.manifest import read_manifest
from manifestkit.workflow import UploadRequest, upload_image
from manifestkit.workflow.delete import delete_upload

from .helpers import MiB, http, random_image, run_cli


@pytest.fixture(autouse=True)
def _sandbox_is_the_configured_endpoint(s3server, monkeypatch):
    # URLs may only point at AWS or the endpoint the user configured (SECURITY.md); the
    # sandbox is on 127.0.0.1, so these tests configure it the way a user would
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3server.endpoint_url)


@pytest.fixture
def uploaded(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "disk.raw", 4 * MiB + 1000, seed=11)
    result = upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB, workers=3),
        s3server.settings(),
    )
    manifest = tmp_path / "manifest.xml"
    status, body = http("GET", result.manifest_url)
    assert status == 200
    manifest.write_bytes(body)
    return image, result, manifest


def _keys(s3server, bucket):
    listing = s3server.client().list_objects_v2(Bucket=bucket)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_verify_good_upload_by_url_and_file(uploaded):
    image, result, manifest = uploaded
    code, out, err = run_cli("verify", result.manifest_url, "-q")
    assert code == 0, err
    assert "OK: 5 parts" in out and "X-Amz-Signature" not in out
    code, out, err = run_cli("verify", str(manifest), "--image", str(image), "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["ok"] == 5 and doc["compared_content"]
    assert doc["bytes_checked"] == image.stat().st_size


def test_verify_reports_a_part_deleted_behind_our_back(s3server, uploaded):
    image, result, manifest = uploaded
    _, parts = read_manifest(str(manifest))
    s3server.client().delete_object(Bucket=result.bucket, Key=parts[2].key)
    code, out, err = run_cli("verify", result.manifest_url, "--output", "json")
    assert code == 1
    doc = json.loads(out)
    assert [(p["index"], p["kind"]) for p in doc["problems"]] == [(2, "missing")]
    assert doc["ok"] == 4


def test_verify_reports_wrong_size_and_different_bytes(s3server, uploaded):
    image, result, manifest = uploaded
    _, parts = read_manifest(str(manifest))
    s3 = s3server.client()
    s3.put_object(Bucket=result.bucket, Key=parts[1].key, Body=b"short")
    data = bytearray(image.read_bytes()[parts[3].start : parts[3].end + 1])
    data[12345] ^= 0xFF
    s3.put_object(Bucket=result.bucket, Key=parts[3].key, Body=bytes(data))
    code, out, err = run_cli("verify", str(manifest), "--output", "json")
    assert code == 1
    assert [(p["index"], p["kind"]) for p in json.loads(out)["problems"]] == [(1, "wrong-size")]
    code, out, err = run_cli("verify", str(manifest), "--image", str(image))
    assert code == 1
    assert "part 1" in out and "wrong-size" in out
    assert f"content-differs: differs from {image} at byte {parts[3].start + 12345}" in out
    assert "FAILED: 2 of 5 parts" in out


def test_verify_refuses_an_image_of_another_size(uploaded, tmp_path):
    image, result, manifest = uploaded
    other = random_image(tmp_path / "other.raw", 3 * MiB)
    code, out, err = run_cli("verify", str(manifest), "--image", str(other))
    assert code == 2 and "bytes but the manifest describes" in err


def test_verify_refuses_an_invalid_manifest(tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text("<not-a-manifest/>")
    code, out, err = run_cli("verify", str(bad))
    assert code == 2 and err.startswith("manifestkit: error:")
    bad.write_text("no xml at all")
    assert run_cli("verify", str(bad))[0] == 2
    assert run_cli("verify", str(tmp_path / "missing.xml"))[0] == 2


def test_verify_of_an_expired_manifest(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "old.raw", MiB)
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=8)
    result = upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB), s3server.settings(), now=old
    )
    manifest = tmp_path / "m.xml"
    s3server.client().download_file(result.bucket, result.manifest_key, str(manifest))
    code, out, err = run_cli("verify", str(manifest))
    assert code == 2 and "expire" in err and "resume" in err


def test_verify_of_a_deleted_manifest_url(s3server, uploaded):
    image, result, manifest = uploaded
    s3server.client().delete_object(Bucket=result.bucket, Key=result.manifest_key)
    code, out, err = run_cli("verify", result.manifest_url)
    assert code == 1 and "404" in err


def test_delete_removes_everything_and_is_idempotent(s3server, uploaded):
    image, result, manifest = uploaded
    prefix = result.manifest_key.rsplit("/", 1)[0]
    assert len([k for k in _keys(s3server, result.bucket) if k.startswith(prefix)]) == 6
    code, out, err = run_cli(
        "delete",
        result.manifest_url,
        "--ignore-active-task",
        "--output",
        "json",
        *s3server.cli_args(),
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["parts"] == 5 and doc["deleted_by_url"] == 6 and doc["manifest_deleted"]
    assert not [k for k in _keys(s3server, result.bucket) if k.startswith(prefix)]
    # again, by URL (the manifest is gone) and from the local file (the parts are gone)
    code, out, err = run_cli(
        "delete", result.manifest_url, "--ignore-active-task", *s3server.cli_args()
    )
    assert code == 0 and "already gone" in out
    code, out, err = run_cli("delete", str(manifest), "--ignore-active-task", *s3server.cli_args())
    assert code == 0, err


def test_delete_refuses_while_a_task_uses_the_manifest(s3server, uploaded):
    image, result, manifest = uploaded
    asked = []

    def active(ref):
        asked.append(ref)
        return "import-i-0123456789abcdef0"

    with pytest.raises(UsageError, match="import-i-0123456789abcdef0"):
        delete_upload(result.manifest_url, active_task_check=active)
    assert asked == [f"{result.bucket}/{result.manifest_key}"]
    assert result.manifest_key in _keys(s3server, result.bucket)
    report = delete_upload(result.manifest_url, active_task_check=active, ignore_active_task=True)
    assert report.manifest_deleted and result.manifest_key not in _keys(s3server, result.bucket)


def test_delete_falls_back_to_credentials_when_urls_expired(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "old.raw", 2 * MiB)
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=8)
    result = upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB), s3server.settings(), now=old
    )
    s3 = s3server.client()
    report = delete_upload(result.manifest_url, s3_client=lambda: s3, ignore_active_task=True)
    assert report.authenticated == 3 and report.by_url == 0
    assert not [k for k in _keys(s3server, bucket) if k.startswith(result.upload_id)]


def test_delete_cli_asks_ec2_for_active_tasks(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "busy.raw", 2 * MiB, seed=12)
    result = upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB), s3server.settings()
    )
    _, parts = read_manifest(str(_fetch(result.manifest_url, tmp_path / "m.xml")))
    # a missing part keeps the sandbox importer waiting: the task stays active
    s3server.client().delete_object(Bucket=bucket, Key=parts[1].key)
    ec2 = s3server.ec2_client()
    task = ec2.import_volume(
        AvailabilityZone=f"{s3server.region}a",
        Image={
            "Format": "RAW",
            "Bytes": image.stat().st_size,
            "ImportManifestUrl": result.manifest_url,
        },
        Volume={"Size": 1},
    )["ConversionTask"]["ConversionTaskId"]
    try:
        args = [
            "delete",
            result.manifest_url,
            *s3server.cli_args(),
            "--ec2-endpoint-url",
            s3server.endpoint_url,
        ]
        code, out, err = run_cli(*args)
        assert code == 2 and task in err and "--ignore-active-task" in err
        assert result.manifest_key in _keys(s3server, bucket)
        code, out, err = run_cli(*args, "--ignore-active-task")
        assert code == 0, err
        assert result.manifest_key not in _keys(s3server, bucket)
    finally:
        ec2.cancel_conversion_task(ConversionTaskId=task)


def _fetch(url, path):
    status, body = http("GET", url)
    assert status == 200
    path.write_bytes(body)
    return path


def test_verify_reports_a_url_the_server_refuses(uploaded, tmp_path):
    image, result, manifest = uploaded
    text = manifest.read_text()
    _, parts = read_manifest(str(manifest))
    signature = parts[1].head_url.rsplit("X-Amz-Signature=", 1)[1]
    forged = ("0" if signature[0] != "0" else "1") + signature[1:]
    tampered = tmp_path / "tampered.xml"
    tampered.write_text(text.replace(signature, forged))
    code, out, err = run_cli("verify", str(tampered), "--output", "json")
    assert code == 1, err
    problems = json.loads(out)["problems"]
    assert [(p["index"], p["kind"]) for p in problems] == [(1, "denied")]
    assert "403" in problems[0]["message"]


def test_a_manifest_url_cut_at_an_ampersand_or_refused_is_one_line_with_the_fix(s3server, uploaded):
    # an unquoted URL in a shell ends at its first '&': bad input (2), said before any fetch
    image, result, _ = uploaded
    cut = result.manifest_url.split("&", 1)[0]
    for argv in (
        ("verify", cut),
        ("delete", cut, *s3server.cli_args()),
        ("resume", cut, str(image), *s3server.cli_args()),
    ):
        code, out, err = run_cli(*argv)
        assert code == 2, err
        assert err.count("\n") == 1 and "single quotes" in err, err
    # a URL S3 refuses (signature changed): S3's own code and message on one line, exit 1
    status, body = http("GET", result.manifest_url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body
    tampered = result.manifest_url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    code, out, err = run_cli("verify", tampered)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "HTTP 403: SignatureDoesNotMatch: " in err, err
    assert "<Error>" not in err
