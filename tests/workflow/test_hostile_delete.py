"""``delete`` deletes only what one upload owns (issue 10 item 1), against the sandbox S3.

A recording proxy (``FaultProxy``) in front of the sandbox is the configured endpoint, so every
test can say which requests reached S3; a victim object shows what still exists afterwards.
"""

from __future__ import annotations

import pytest

from manifestkit.workflow import UploadRequest, upload_image

from . import hostile
from .faultproxy import FaultProxy
from .helpers import MiB, random_image, run_cli

VICTIM_KEY = "payroll/important.db"


@pytest.fixture
def proxy(s3server):
    with FaultProxy(s3server.endpoint_url) as running:
        yield running


@pytest.fixture
def victim(s3server, bucket):
    s3 = s3server.client()
    s3.put_object(Bucket=bucket, Key=VICTIM_KEY, Body=b"salaries")
    return bucket


def _still_there(s3server, bucket, key=VICTIM_KEY):
    return s3server.client().get_object(Bucket=bucket, Key=key)["Body"].read() != b""


def _delete(s3server, proxy, manifest, *extra):
    return run_cli(
        "delete",
        str(manifest),
        "--ignore-active-task",
        "--region",
        s3server.region,
        "--s3-endpoint-url",
        proxy.url,
        *extra,
    )


def _refused(code, err, where):
    assert code == 2, err
    assert err.count("\n") == 1 and "not deleting anything" in err, err
    assert where in err, err


def test_a_self_destruct_url_aimed_at_another_object(s3server, proxy, victim, tmp_path):
    sign = hostile.signer(proxy.url)
    doc = hostile.manifest_xml(
        sign.url("DELETE", victim, VICTIM_KEY),
        [
            (
                "payroll/x.part0",
                *(sign.url(m, victim, "payroll/x.part0") for m in ("HEAD", "GET", "DELETE")),
            )
        ],
    )
    manifest = tmp_path / "m.xml"
    manifest.write_bytes(doc)
    code, _, err = _delete(s3server, proxy, manifest)
    _refused(code, err, "/manifest/self-destruct-url")
    assert proxy.requests("DELETE", outcome=None) == []
    assert _still_there(s3server, victim)


def test_a_part_delete_url_aimed_at_another_object(s3server, proxy, victim, tmp_path):
    sign = hostile.signer(proxy.url)
    doc = hostile.upload_like(sign, victim, "imports/u1", "disk.raw", 3).decode()
    genuine = sign.url("DELETE", victim, "imports/u1/disk.raw.part1")
    doc = doc.replace(
        genuine.replace("&", "&amp;"), sign.url("DELETE", victim, VICTIM_KEY).replace("&", "&amp;")
    )
    manifest = tmp_path / "m.xml"
    manifest.write_text(doc)
    code, _, err = _delete(s3server, proxy, manifest)
    _refused(code, err, "part[2]/delete-url")
    assert proxy.requests("DELETE", outcome=None) == []
    assert _still_there(s3server, victim)


def test_keys_outside_one_folder(s3server, proxy, victim, tmp_path):
    sign = hostile.signer(proxy.url)
    parts = []
    for key in ("imports/u1/disk.raw.part0", "other/u2/disk.raw.part1"):
        parts.append((key, *(sign.url(m, victim, key) for m in ("HEAD", "GET", "DELETE"))))
    doc = hostile.manifest_xml(sign.url("DELETE", victim, "imports/u1/disk.rawmanifest.xml"), parts)
    manifest = tmp_path / "m.xml"
    manifest.write_bytes(doc)
    code, _, err = _delete(s3server, proxy, manifest)
    _refused(code, err, "part[2]")
    assert proxy.requests("DELETE", outcome=None) == []


def test_expired_urls_never_make_the_credentials_delete_a_foreign_key(
    s3server, proxy, victim, tmp_path
):
    """The issue's attack: expired URLs for s3://victim/payroll/important.db in a folder-shaped
    manifest; the credential fallback would have deleted it with the user's keys."""
    sign = hostile.signer(proxy.url, days_ago=8, key="AKIAATTACKER")
    key = VICTIM_KEY
    doc = hostile.manifest_xml(
        sign.url("DELETE", victim, "payroll/manifest.xml"),
        [(key, *(sign.url(m, victim, key) for m in ("HEAD", "GET", "DELETE")))],
    )
    manifest = tmp_path / "m.xml"
    manifest.write_bytes(doc)
    code, _, err = _delete(s3server, proxy, manifest)
    _refused(code, err, "part[1]/delete-url")
    assert "credentials" in err
    assert proxy.requests(outcome=None) == []  # not even a presigned DELETE was tried
    assert _still_there(s3server, victim)


def test_a_server_that_answers_delete_with_an_html_page_did_not_delete(tmp_path):
    with hostile.Hostile() as server:
        server.routes["*"] = hostile.body(
            b"<html><body>Deleted!</body></html>", 200, {"Content-Type": "text/html"}
        )
        manifest = tmp_path / "m.xml"
        manifest.write_bytes(
            hostile.upload_like(hostile.signer(server.endpoint), "bkt", "up/u1", "d.raw", 2)
        )
        code, out, err = run_cli(
            "delete", str(manifest), "--ignore-active-task", "--s3-endpoint-url", server.endpoint
        )
        assert code == 1 and out == "", err
        assert err.count("\n") == 1 and "was not deleted" in err and "not S3's" in err
        assert "text/html" in err and "no x-amz-request-id" in err
        # the manifest itself is never deleted when a part was not
        assert ("DELETE", "/bkt/up/u1/d.rawmanifest.xml") not in server.requests
        # an S3-looking request id does not make an HTML page S3's answer
        server.routes["*"] = hostile.body(
            b"<html>ok</html>", 200, {"Content-Type": "text/html", "x-amz-request-id": "X1"}
        )
        code, out, err = run_cli(
            "delete", str(manifest), "--ignore-active-task", "--s3-endpoint-url", server.endpoint
        )
        assert code == 1 and "was not deleted" in err and "text/html" in err, err


def test_a_genuine_upload_is_still_deleted_by_url_and_after_expiry(
    s3server, proxy, bucket, tmp_path
):
    import datetime as dt

    for days_ago, how in ((0, "deleted_by_url"), (8, "deleted_authenticated")):
        image = random_image(tmp_path / f"d{days_ago}.raw", 2 * MiB + 5, seed=days_ago)
        result = upload_image(
            UploadRequest(image=str(image), bucket=bucket, part_size=MiB),
            s3server.settings(s3_endpoint_url=proxy.url),
            now=dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days_ago),
        )
        manifest = tmp_path / f"m{days_ago}.xml"
        s3server.client().download_file(bucket, result.manifest_key, str(manifest))
        proxy.reset_counts()
        code, out, err = _delete(s3server, proxy, manifest, "--output", "json")
        assert code == 0, err
        import json

        assert json.loads(out)[how] == 4  # 3 parts and the manifest
        listing = s3server.client().list_objects_v2(Bucket=bucket, Prefix=result.upload_id)
        assert listing.get("KeyCount", 0) == 0
