"""``upload`` of an image that is uploaded already (issue 11 item 5): no second copy unless
``--new-upload``, and the record of the first stays findable."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess

import pytest

from manifestkit.s3.presign import parse_presigned_url
from manifestkit.workflow import UploadRequest, upload_image

from .faultproxy import FaultProxy
from .helpers import MiB, assert_parts_match, fetch_manifest, random_image, run_cli


def _upload(s3server, image, *extra, endpoint=None):
    code, out, err = run_cli(
        "upload", str(image), "-q", "--output", "json", *extra, *s3server.cli_args(endpoint)
    )
    return code, (json.loads(out) if out else None), err


def _state(image):
    return json.loads((image.parent / (image.name + ".manifestkit-state.json")).read_text())


def _folders(s3server, bucket):
    keys = [o["Key"] for o in s3server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key.split("/")[0] for key in keys}


def test_upload_again_prints_the_first_upload_s_url_and_sends_nothing(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "done.raw", 3 * MiB, seed=31)
    code, first, err = _upload(s3server, image, "--bucket", bucket, "--part-size", str(MiB))
    assert code == 0, err
    with FaultProxy(s3server.endpoint_url) as proxy:
        code, again, err = _upload(s3server, image, "--bucket", bucket, endpoint=proxy.url)
        assert code == 0, err
        assert proxy.part_puts() == []
        # the URL names the endpoint it was asked through: fetch it while the proxy runs
        assert_parts_match(fetch_manifest(again["manifest_url"], tmp_path / "m.xml"), image)
    assert again["already_uploaded"] and not first["already_uploaded"]
    assert again["upload_id"] == first["upload_id"] == _state(image)["upload_id"]
    assert again["manifest_key"] == first["manifest_key"] and not again["manifest_written"]
    assert again["put"] == 0 and again["kept"] == 3
    assert _folders(s3server, bucket) == {first["upload_id"]}  # no second copy
    # the text output is the URL, and stderr says why nothing was sent
    code, out, err = run_cli("upload", str(image), "--bucket", bucket, *s3server.cli_args())
    assert code == 0 and out.startswith("http") and "uploaded already" in err


def test_upload_again_renews_urls_that_expire_within_the_margin(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "aging.raw", 2 * MiB, seed=32)
    signed = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=6, hours=12)
    first = upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB),
        s3server.settings(),
        now=signed,
    )
    code, again, err = _upload(s3server, image, "--bucket", bucket)
    assert code == 0, err
    assert again["already_uploaded"] and again["manifest_written"] and again["put"] == 0
    assert again["upload_id"] == first.upload_id
    expires = parse_presigned_url(again["manifest_url"]).expires_at
    assert expires - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=6)
    assert_parts_match(fetch_manifest(again["manifest_url"], tmp_path / "m.xml"), image)


def test_new_upload_sends_a_second_copy_and_keeps_the_first_record(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "twice.raw", 2 * MiB, seed=33)
    code, first, err = _upload(s3server, image, "--bucket", bucket)
    assert code == 0, err
    code, second, err = _upload(s3server, image, "--bucket", bucket, "--new-upload")
    assert code == 0, err
    assert second["upload_id"] != first["upload_id"] and not second["already_uploaded"]
    assert _folders(s3server, bucket) == {first["upload_id"], second["upload_id"]}
    kept = second["previous_state_file"]
    assert kept and os.path.exists(kept) and first["upload_id"] in os.path.basename(kept)
    assert json.loads(open(kept).read())["upload_id"] == first["upload_id"]
    assert _state(image)["upload_id"] == second["upload_id"]


def test_upload_again_elsewhere_without_new_upload_is_refused(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "moved.raw", 2 * MiB, seed=34)
    code, first, err = _upload(s3server, image, "--bucket", bucket)
    assert code == 0, err
    recorded = _state(image)
    code, out, err = _upload(s3server, image, "--bucket", bucket, "--prefix", "other")
    assert code == 2 and out["error"]["exit_code"] == 2  # --output json: the error document
    said = json.dumps(out["error"])
    assert "uploaded already" in said and "--new-upload" in said
    assert _state(image) == recorded and _folders(s3server, bucket) == {first["upload_id"]}


def test_upload_of_a_changed_image_is_a_new_upload_and_keeps_the_old_record(
    s3server, bucket, tmp_path
):
    image = random_image(tmp_path / "edited.raw", 2 * MiB, seed=35)
    code, first, err = _upload(s3server, image, "--bucket", bucket)
    assert code == 0, err
    random_image(image, 2 * MiB, seed=36)
    os.utime(image, ns=(0, _state(image)["mtime_ns"] + 10**9))
    argv = ["upload", str(image), "--bucket", bucket, "--output", "json", *s3server.cli_args()]
    code, out, err = run_cli(*argv)
    assert code == 0, err
    second = json.loads(out)
    assert err.count(second["previous_state_file"]) == 1  # said once, not twice
    assert second["upload_id"] != first["upload_id"] and not second["already_uploaded"]
    assert json.loads(open(second["previous_state_file"]).read())["upload_id"] == first["upload_id"]
    assert_parts_match(fetch_manifest(second["manifest_url"], tmp_path / "m.xml"), image)


def test_new_upload_contradicts_resume(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "x.raw", MiB, seed=37)
    code, out, err = _upload(s3server, image, "--resume", "--new-upload")
    assert code == 2 and "--new-upload" in err


def test_upload_convert_again_of_a_streamed_upload_sends_nothing(s3server, bucket, tmp_path):
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    raw = random_image(tmp_path / "src.raw", 2 * MiB, seed=38)
    sparse = tmp_path / "sparse.vmdk"  # monolithicSparse: not importable, converted on the fly
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(sparse)], check=True
    )
    argv = ["--bucket", bucket, "--convert", "--part-size", str(MiB)]
    code, first, err = _upload(s3server, sparse, *argv)
    assert code == 0, err
    assert first["converted"] and not first["already_uploaded"]
    with FaultProxy(s3server.endpoint_url) as proxy:
        code, again, err = _upload(s3server, sparse, *argv, endpoint=proxy.url)
        assert code == 0, err
        assert proxy.part_puts() == []
    assert again["already_uploaded"] and again["upload_id"] == first["upload_id"]
    assert _folders(s3server, bucket) == {first["upload_id"]}


def test_upload_again_after_the_upload_was_deleted_is_a_new_upload(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "deleted.raw", 2 * MiB, seed=39)
    code, first, err = _upload(s3server, image, "--bucket", bucket)
    assert code == 0, err
    code, out, err = run_cli(
        "delete", first["manifest_url"], "-q", "--ignore-active-task", *s3server.cli_args()
    )
    assert code == 0, err
    assert _folders(s3server, bucket) == set()
    code, second, err = _upload(s3server, image, "--bucket", bucket)
    assert code == 0, err
    assert not second["already_uploaded"] and second["upload_id"] != first["upload_id"]
    assert json.loads(open(second["previous_state_file"]).read())["upload_id"] == first["upload_id"]
    assert_parts_match(fetch_manifest(second["manifest_url"], tmp_path / "m.xml"), image)


@pytest.mark.parametrize("convert", [False, True], ids=["file", "streamed"])
def test_new_upload_says_where_the_first_record_is_kept(s3server, bucket, tmp_path, convert):
    raw = random_image(tmp_path / "src.raw", 2 * MiB, seed=40)
    image = raw
    if convert:  # a monolithicSparse VMDK: streamed converted
        if shutil.which("qemu-img") is None:
            pytest.skip("qemu-img not installed")
        image = tmp_path / "sparse.vmdk"
        subprocess.run(["qemu-img", "convert", "-O", "vmdk", str(raw), str(image)], check=True)
    argv = ["upload", str(image), "--bucket", bucket, "--output", "json", *s3server.cli_args()]
    argv += ["--convert"] if convert else []
    code, out, err = run_cli(*argv)
    assert code == 0, err
    code, out, err = run_cli(*argv, "--new-upload")
    assert code == 0, err
    kept = json.loads(out)["previous_state_file"]
    assert f"the record of the earlier upload of {image} is kept in {kept}" in err
