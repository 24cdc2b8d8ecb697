"""``manifestkit upload`` over real HTTP: parts, verification, manifest, URL; zero parts; faults."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import time

import pytest

from manifestkit.manifest import read_manifest

from .faultproxy import FaultProxy
from .helpers import (
    MiB,
    assert_parts_match,
    fetch_manifest,
    http,
    random_image,
    run_cli,
    sparse_image,
)


def _upload(s3server, bucket, image, *extra, endpoint=None):
    return run_cli(
        "upload",
        str(image),
        "--bucket",
        bucket,
        "--part-size",
        "1M",
        "--workers",
        "4",
        "-q",
        *s3server.cli_args(endpoint),
        *extra,
    )


def test_upload_then_every_part_reads_back(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "disk.raw", 5 * MiB + 12345)
    code, out, err = _upload(s3server, bucket, image)
    assert code == 0, err
    url = out.strip()
    assert url.startswith(s3server.endpoint_url) and "X-Amz-Signature=" in url
    manifest = fetch_manifest(url, tmp_path / "m.xml")
    assert assert_parts_match(manifest, image) == 6
    header, parts = read_manifest(str(manifest))
    assert header.file_format == "RAW" and header.volume_size == 1
    # the objects themselves: sizes and MD5 ETags, checked with a plain boto3 client
    s3 = s3server.client()
    data = image.read_bytes()
    for part in parts:
        head = s3.head_object(Bucket=bucket, Key=part.key)
        assert head["ContentLength"] == part.size
        assert head["ETag"].strip('"') == hashlib.md5(data[part.start : part.end + 1]).hexdigest()
    # the state file: beside the image, mode 0600, complete, no URL in it
    state = tmp_path / "disk.raw.manifestkit-state.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    recorded = json.loads(state.read_text())
    assert recorded["complete"] is True and recorded["bucket"] == bucket
    assert "X-Amz-Signature" not in state.read_text()
    # the URL is the result on stdout, and nowhere on stderr
    assert "X-Amz-Signature" not in err


def test_upload_json_output(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "d.raw", 2 * MiB)
    code, out, err = _upload(s3server, bucket, image, "--output", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["parts"] == 2 and doc["put"] == 2 and doc["bytes_sent"] == 2 * MiB
    assert doc["manifest_key"].endswith("/d.rawmanifest.xml")
    status, _ = http("GET", doc["manifest_url"])
    assert status == 200


def test_signed_urls_are_refused_when_tampered_or_method_swapped(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "d.raw", 1 * MiB + 1)
    code, out, err = _upload(s3server, bucket, image)
    assert code == 0, err
    manifest = fetch_manifest(out.strip(), tmp_path / "m.xml")
    _, parts = read_manifest(str(manifest))
    part = parts[0]
    assert http("HEAD", part.head_url)[0] == 200
    assert http("GET", part.head_url)[0] == 403  # signed for HEAD, used for GET
    assert http("DELETE", part.get_url)[0] == 403
    tampered = part.get_url.replace(".part0", ".part1")
    assert http("GET", tampered)[0] == 403
    sig = part.get_url.rsplit("X-Amz-Signature=", 1)[1]
    flipped = part.get_url[: -len(sig)] + ("0" if sig[0] != "0" else "1") + sig[1:]
    assert http("GET", flipped)[0] == 403


def test_zero_parts_are_copied_server_side(s3server, bucket, tmp_path):
    # 12 MiB sparse file: data in part 0 and part 7, everything else a hole; short zero tail part
    image = sparse_image(tmp_path / "sparse.raw", 12 * MiB + 4096, [(0, MiB), (7 * MiB + 5, 100)])
    with FaultProxy(s3server.endpoint_url) as proxy:
        code, out, err = _upload(s3server, bucket, image, "--output", "json", endpoint=proxy.url)
        assert code == 0, err
        doc = json.loads(out)
        puts, copies = proxy.part_puts(), proxy.copies()
        manifest = fetch_manifest(doc["manifest_url"], tmp_path / "m.xml")
        assert_parts_match(manifest, image)
    # 13 parts: 2 with data, 10 full-size zero parts (1 sent + 9 copied), the short zero tail (sent)
    assert doc["parts"] == 13
    assert len(puts) == 4 and doc["put"] == 4
    assert len(copies) == 9 and doc["copied"] == 9
    assert doc["bytes_sent"] == 3 * MiB + 4096
    assert sum(p.body_bytes for p in puts) == 3 * MiB + 4096


def test_written_zeros_are_detected_by_reading(s3server, bucket, tmp_path):
    image = tmp_path / "zeros.raw"
    image.write_bytes(bytes(4 * MiB) + b"\x01" * MiB)  # zeros written out: no holes
    with FaultProxy(s3server.endpoint_url) as proxy:
        code, out, err = _upload(s3server, bucket, image, "--output", "json", endpoint=proxy.url)
        assert code == 0, err
        assert len(proxy.copies()) == 3 and len(proxy.part_puts()) == 2
        url = json.loads(out)["manifest_url"]
        assert_parts_match(fetch_manifest(url, tmp_path / "m.xml"), image)


def test_faults_on_the_wire_do_not_corrupt_the_upload(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "faulty.raw", 12 * MiB + 777, seed=7)
    with FaultProxy(s3server.endpoint_url, fault_rate=0.25, seed=2) as proxy:
        code, out, err = _upload(s3server, bucket, image, endpoint=proxy.url)
        assert code == 0, err
        faults = [s for s in proxy.requests(outcome=None) if s.outcome != "ok"]
        # seed 2: the first 20 requests (fewer than any upload makes) meet all three kinds
        assert len({s.outcome for s in faults}) == 3, "every kind of fault was injected"
        proxy.fault_rate = 0.0
        manifest = fetch_manifest(out.strip(), tmp_path / "m.xml")
        assert assert_parts_match(manifest, image) == 13


def test_slow_server_still_completes(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "slow.raw", 3 * MiB, seed=3)
    with FaultProxy(s3server.endpoint_url, delay=0.3) as proxy:
        code, out, err = _upload(s3server, bucket, image, endpoint=proxy.url)
        assert code == 0, err
        assert_parts_match(fetch_manifest(out.strip(), tmp_path / "m.xml"), image)


def test_disk_read_error_is_one_line_exit_2(s3server, bucket, tmp_path, monkeypatch):
    image = random_image(tmp_path / "bad.raw", 3 * MiB)
    real_pread = os.pread

    def failing_pread(fd, n, offset):
        if offset >= MiB:
            raise OSError(errno.EIO, "Input/output error")
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", failing_pread)
    code, out, err = _upload(s3server, bucket, image)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("manifestkit: error: ")
    assert "Input/output error" in lines[0] and str(image) in lines[0]
    assert out == ""
    # nothing was deleted; no manifest was written; the state is kept for --resume
    state = json.loads((tmp_path / "bad.raw.manifestkit-state.json").read_text())
    assert state["complete"] is False
    keys = [o["Key"] for o in s3server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not any(k.endswith("manifest.xml") for k in keys)


def test_missing_bucket_exit_2_then_create_bucket(s3server, tmp_path):
    image = random_image(tmp_path / "d.raw", MiB)
    name = f"mk-missing-{os.getpid()}"
    code, out, err = _upload(s3server, name, image)
    assert code == 2 and "does not exist" in err and "--create-bucket" in err
    code, out, err = _upload(s3server, name, image, "--create-bucket")
    assert code == 0, err
    assert s3server.client().head_bucket(Bucket=name)["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_bucket_in_another_region(s3server, tmp_path):
    image = random_image(tmp_path / "d.raw", MiB)
    name = f"mk-elsewhere-{os.getpid()}"
    s3server.client(region="eu-west-1").create_bucket(
        Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    code, out, err = _upload(s3server, name, image)
    assert code == 2
    assert "eu-west-1" in err and "us-east-1" in err and "--ignore-region-affinity" in err
    code, out, err = _upload(s3server, name, image, "--ignore-region-affinity")
    assert code == 0, err
    # the URLs are signed for the bucket's region
    assert "%2Feu-west-1%2Fs3%2F" in out


def test_create_bucket_uses_the_ec2_region(s3server, tmp_path):
    image = random_image(tmp_path / "d.raw", MiB)
    name = f"mk-created-{os.getpid()}"
    code, out, err = run_cli(
        "upload",
        str(image),
        "--bucket",
        name,
        "--create-bucket",
        "-q",
        "--region",
        "eu-central-1",
        "--s3-endpoint-url",
        s3server.endpoint_url,
    )
    assert code == 0, err
    location = s3server.client().get_bucket_location(Bucket=name)["LocationConstraint"]
    assert location == "eu-central-1"


def test_bucket_owner_is_passed_to_every_call_that_takes_it(
    s3server, bucket, tmp_path, monkeypatch
):
    import botocore.session

    seen: list[tuple[str, str | None]] = []
    original = botocore.session.Session.create_client

    def create_client(self, *args, **kwargs):
        client = original(self, *args, **kwargs)

        def record(params, model, **_):
            if "ExpectedBucketOwner" in model.input_shape.members:
                seen.append((model.name, params.get("ExpectedBucketOwner")))

        client.meta.events.register("provide-client-params.s3.*", record)
        return client

    monkeypatch.setattr(botocore.session.Session, "create_client", create_client)
    image = sparse_image(tmp_path / "o.raw", 4 * MiB, [(0, 10)])
    code, out, err = _upload(s3server, bucket, image, "--bucket-owner", "123456789012")
    assert code == 0, err
    names = {name for name, _ in seen}
    # the verification pass lists the parts (ListObjectsV2) rather than a HEAD per part
    assert {"HeadBucket", "PutObject", "CopyObject", "ListObjectsV2"} <= names
    assert all(owner == "123456789012" for _, owner in seen), seen


def test_wrong_credentials_exit_2(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "d.raw", MiB)
    code, out, err = _upload(
        s3server,
        bucket,
        image,
        "--aws-access-key",
        s3server.access_key,
        "--aws-secret-key",
        "wrong-secret",
    )
    assert code == 2
    # the secret given on the command line is warned about (process list), then one error line
    warning, error = err.strip().splitlines()
    assert "--aws-secret-key on the command line is visible" in warning
    assert "SignatureDoesNotMatch" in error and "wrong-secret" not in err
    code, out, err = _upload(
        s3server,
        bucket,
        image,
        "--aws-access-key",
        "AKIDUNKNOWN",
        "--aws-secret-key",
        "wrong-secret",
    )
    assert code == 2 and "InvalidAccessKeyId" in err
    code, out, err = _upload(s3server, bucket, image, "--aws-secret-key", "half-a-pair")
    assert code == 2 and "go together" in err


def test_not_importable_image_is_refused(s3server, bucket, tmp_path):
    image = tmp_path / "disk.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(4092))
    code, out, err = _upload(s3server, bucket, image)
    assert code == 2 and "qcow2" in err.lower()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--part-size", "0"], "part size"),
        (["--expires", "8"], "7 days"),
        (["--workers", "0"], "positive"),
        (["--part-size", "ten"], "invalid size 'ten'"),
    ],
)
def test_bad_options(s3server, bucket, tmp_path, argv, message):
    image = random_image(tmp_path / "d.raw", MiB)
    code, out, err = _upload(s3server, bucket, image, *argv)
    assert code == 2 and message in err and out == ""
    # one line, design.md's prefix, no usage dump or traceback
    assert err.count("\n") == 1 and err.startswith("manifestkit: error: "), err


def test_debug_shows_the_traceback_and_the_error_line_once(s3server, bucket, tmp_path):
    missing = tmp_path / "missing.raw"
    code, out, err = _upload(s3server, bucket, missing, "--debug")
    assert code == 2 and out == ""
    assert err.count("Traceback (most recent call last)") == 1
    errors = [line for line in err.splitlines() if line.startswith("manifestkit: error: ")]
    assert len(errors) == 1 and str(missing) in errors[0], err
    assert err.rstrip("\n").splitlines()[-1] == errors[0]


def test_access_denied_is_one_line_and_deletes_nothing(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "denied.raw", 3 * MiB)

    def deny_part_puts(method, path):
        return (403, "AccessDenied") if method == "PUT" and ".part" in path else None

    with FaultProxy(s3server.endpoint_url, answer=deny_part_puts) as proxy:
        code, out, err = _upload(s3server, bucket, image, endpoint=proxy.url)
        assert proxy.requests("DELETE", outcome=None) == []
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "access denied" in lines[0] and "s3:PutObject" in lines[0]


def test_server_errors_that_do_not_stop_fail_with_exit_1(s3server, bucket, tmp_path, monkeypatch):
    import manifestkit.s3.part_upload as upload_module
    from manifestkit.errors import UploadError
    from manifestkit.workflow import UploadRequest, upload_image

    monkeypatch.setattr(upload_module, "_RETRY_BACKOFF", 0.01)
    image = random_image(tmp_path / "down.raw", MiB)

    def always_500(method, path):
        return (500, "InternalError") if method == "PUT" and ".part" in path else None

    with FaultProxy(s3server.endpoint_url, answer=always_500) as proxy:
        settings = s3server.settings(s3_endpoint_url=proxy.url, max_attempts=2)
        with pytest.raises(UploadError, match="failed after 3 attempts") as caught:
            upload_image(UploadRequest(image=str(image), bucket=bucket, part_size=MiB), settings)
        # botocore's 3 tries (max_attempts=2 retries) for each of the 3 part-level attempts
        assert len(proxy.requests("PUT", outcome="forced")) == 9
    assert caught.value.exit_code == 1 and "--resume" in str(caught.value)


def test_a_failing_server_ends_the_upload_in_seconds(s3server, bucket, tmp_path):
    """botocore's default 8 retries per request (20 s back-off cap) are bounded for uploads:
    3 tries per request x 3 part-level attempts, with the real back-off (not patched)."""
    from manifestkit.aws import AwsSettings
    from manifestkit.errors import UploadError
    from manifestkit.workflow import UploadRequest, upload_image

    image = random_image(tmp_path / "down8.raw", MiB)

    def always_503(method, path):
        return (503, "SlowDown") if method == "PUT" and ".part" in path else None

    with FaultProxy(s3server.endpoint_url, answer=always_503) as proxy:
        settings = s3server.settings(
            s3_endpoint_url=proxy.url, max_attempts=AwsSettings().max_attempts
        )
        started = time.monotonic()
        with pytest.raises(UploadError, match="failed after 3 attempts"):
            upload_image(UploadRequest(image=str(image), bucket=bucket, part_size=MiB), settings)
        elapsed = time.monotonic() - started
        assert len(proxy.requests("PUT", outcome="forced")) == 9
    assert elapsed < 30, elapsed


def test_expired_urls_are_refused(s3server, bucket, tmp_path, sandbox_clock):
    image = random_image(tmp_path / "d.raw", MiB)
    code, out, err = _upload(s3server, bucket, image, "--expires", "1")
    assert code == 0, err
    manifest = fetch_manifest(out.strip(), tmp_path / "m.xml")
    _, parts = read_manifest(str(manifest))
    assert http("GET", parts[0].get_url)[0] == 200
    sandbox_clock.advance(86400 + 60)
    status, body = http("GET", parts[0].get_url)
    assert status == 403 and b"expired" in body.lower()
    assert http("GET", out.strip())[0] == 403


@pytest.mark.parametrize(
    "argv",
    [
        ["upload", "{image}", "--bucket", "bucket1"],
        ["upload", "{image}", "--resume"],
        ["resume", "http://127.0.0.1:9/bucket1/u/d.rawmanifest.xml", "{image}"],
    ],
)
def test_a_missing_image_is_bad_input_before_any_network_call(tmp_path, argv):
    missing = str(tmp_path / "missing.raw")
    unreachable = ["--region", "us-east-1", "--s3-endpoint-url", "http://127.0.0.1:9"]
    code, out, err = run_cli(*[a.format(image=missing) for a in argv], *unreachable)
    assert code == 2 and out == "", err
    assert err == f"manifestkit: error: {missing}: no such file; check the path\n"


class _Recorder:
    """A ``Progress`` that records each bar: [description, total, sum of advances]."""

    def __init__(self):
        self.bars = []

    def start(self, total, description):
        self.bars.append([description, total, 0])

    def advance(self, amount):
        self.bars[-1][2] += amount

    def close(self):
        pass


def test_the_verification_pass_reports_progress_too(s3server, bucket, tmp_path):
    # a HEAD for every part after the upload bar reached 100%: with 100,000 parts on a far
    # link that is minutes of a finished bar and nothing else moving
    from manifestkit.workflow import UploadRequest, upload_image

    image = random_image(tmp_path / "disk.raw", 3 * MiB + 7, seed=5)
    recorder = _Recorder()
    upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB),
        s3server.settings(),
        progress=recorder,
    )
    size = image.stat().st_size
    assert recorder.bars == [["upload", size, size], ["verify", size, size]]


def test_no_region_names_the_variable_boto3_reads(s3server, bucket, tmp_path, monkeypatch):
    # boto3 never reads AWS_REGION: a fix that offered it sent the user round in a circle
    image = random_image(tmp_path / "r.raw", MiB)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", s3server.region)
    argv = ["upload", str(image), "-b", bucket, "-q", "--s3-endpoint-url", s3server.endpoint_url]
    code, out, err = run_cli(*argv)
    assert code == 2 and out == ""
    assert "no AWS region configured" in err and "set AWS_DEFAULT_REGION" in err
    assert "set AWS_REGION" not in err
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3server.region)  # what the message says to do
    code, out, err = run_cli(*argv)
    assert code == 0, err


def test_a_volume_size_above_the_ebs_maximum_is_refused_before_any_part(s3server, bucket, tmp_path):
    # it was refused only when the manifest was written, after every part had been sent (and
    # the state then recorded it, so --resume failed the same way)
    image = random_image(tmp_path / "v.raw", 2 * MiB)
    code, out, err = _upload(s3server, bucket, image, "--volume-size", "16385")
    assert code == 2 and out == ""
    assert "16384" in err and err.count("\n") == 1
    assert s3server.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert not (tmp_path / "v.raw.manifestkit-state.json").exists()
    code, out, err = _upload(s3server, bucket, image, "--volume-size", "16384")
    assert code == 0, err
