"""Every URL of a built manifest works against the signature-checking sandbox S3 (real HTTP on
127.0.0.1): each with its own method, and none with another method or after it expires."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from manifestkit.cli import main
from manifestkit.manifest import read_manifest, validate_manifest

pytest.importorskip("moto")

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def call(url: str, method: str) -> tuple[int, bytes]:
    assert url.startswith("http://127.0.0.1:")
    try:
        with _OPENER.open(urllib.request.Request(url, method=method), timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def uploaded(tmp_path: Path, sandbox: Any, s3: Any, bucket: str, capsys, sandbox_clock):
    """An image, its manifest from ``manifestkit manifest``, parts and manifest put in S3."""
    image = tmp_path / "disk with space+plus.raw"
    data = os.urandom(70_000)
    image.write_bytes(data)
    manifest = tmp_path / "m.xml"
    code = main(
        [
            "manifest",
            str(image),
            "--bucket",
            bucket,
            "--prefix",
            "imports/é x",
            "--part-size",
            "32KiB",
            "--s3-endpoint-url",
            sandbox.endpoint_url,
            "--region",
            sandbox.region,
            "--output-file",
            str(manifest),
        ]
    )
    assert code == 0, capsys.readouterr().err
    header, parts = read_manifest(manifest)
    for part in parts:
        s3.put_object(Bucket=bucket, Key=part.key, Body=data[part.start : part.end + 1])
    manifest_key = parts[0].key.rsplit("/", 1)[0] + "/" + image.name + "manifest.xml"
    s3.put_object(Bucket=bucket, Key=manifest_key, Body=manifest.read_bytes())
    return data, header, parts, manifest_key


def test_every_url_works_with_its_method(uploaded, s3: Any, bucket: str):
    data, header, parts, manifest_key = uploaded
    assert len(parts) == 3
    for part in parts:
        status, _ = call(part.head_url, "HEAD")
        assert status == 200
        status, body = call(part.get_url, "GET")
        assert status == 200 and body == data[part.start : part.end + 1]
    for part in parts:
        assert call(part.delete_url, "DELETE")[0] == 204
        assert call(part.head_url, "HEAD")[0] == 404  # gone: the URL was for this very key
    assert call(header.self_destruct_url, "DELETE")[0] == 204
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert manifest_key.endswith("manifest.xml")


@pytest.mark.parametrize(
    ("field", "method"),
    [
        ("get_url", "HEAD"),
        ("head_url", "GET"),
        ("get_url", "DELETE"),
        ("head_url", "DELETE"),
        ("delete_url", "GET"),
    ],
)
def test_a_swapped_method_is_refused(uploaded, s3: Any, bucket: str, field, method):
    _, header, parts, manifest_key = uploaded
    status, _ = call(getattr(parts[1], field), method)
    assert status == 403
    # nothing was deleted by a refused DELETE
    assert s3.head_object(Bucket=bucket, Key=parts[1].key)["ContentLength"] == parts[1].size
    assert call(header.self_destruct_url, "GET")[0] == 403


def test_urls_stop_working_when_expired(uploaded, sandbox_clock):
    _, header, parts, _ = uploaded
    assert call(parts[0].get_url, "GET")[0] == 200
    sandbox_clock.advance(7 * 86400 + 1)
    assert call(parts[0].get_url, "GET")[0] == 403
    assert call(header.self_destruct_url, "DELETE")[0] == 403


def test_the_stored_manifest_validates_with_the_sandbox_credentials(
    uploaded, sandbox: Any, s3: Any, bucket: str
):
    from botocore.credentials import ReadOnlyCredentials

    _, _, _, manifest_key = uploaded
    body = s3.get_object(Bucket=bucket, Key=manifest_key)["Body"].read()
    creds = ReadOnlyCredentials(sandbox.access_key, sandbox.secret_key, None)
    assert validate_manifest(body, credentials=creds) == []
