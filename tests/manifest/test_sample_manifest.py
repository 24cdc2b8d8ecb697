"""samples/sample-manifest.xml is reproducible, valid, and signed as botocore would sign it."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from unittest import mock

import boto3
import pytest
from botocore.config import Config

from manifestkit.manifest import read_manifest, validate_manifest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SAMPLE = SAMPLES / "sample-manifest.xml"

pytestmark = pytest.mark.skipif(not SAMPLE.exists(), reason="sample manifest not generated")


def maker():
    spec = importlib.util.spec_from_file_location(
        "make_sample_manifest", SAMPLES / "make_sample_manifest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_is_reproducible(tmp_path):
    out = tmp_path / "again.xml"
    maker().make(str(out))
    assert out.read_bytes() == SAMPLE.read_bytes()


def test_sample_is_valid_and_describes_the_vmdk():
    m = maker()
    assert validate_manifest(SAMPLE, credentials=m.CREDENTIALS) == []
    header, parts = read_manifest(SAMPLE)
    assert header.size == (SAMPLES / "tiny-stream.vmdk").stat().st_size
    assert header.file_format == "VMDK" and len(parts) == header.part_count > 1


def test_sample_urls_match_botocore():
    m = maker()
    client = boto3.Session(
        aws_access_key_id=m.CREDENTIALS.access_key,
        aws_secret_access_key=m.CREDENTIALS.secret_key,
    ).client(
        "s3",
        region_name=m.REGION,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"},
        ),
    )
    _, parts = read_manifest(SAMPLE)
    with mock.patch(
        "botocore.auth.get_current_datetime", return_value=m.SIGNED_AT.replace(tzinfo=None)
    ):
        for part in parts:
            params = {"Bucket": m.BUCKET, "Key": part.key}
            assert part.get_url == client.generate_presigned_url(
                "get_object", Params=params, ExpiresIn=604800
            )
            assert part.head_url == client.generate_presigned_url(
                "head_object", Params=params, ExpiresIn=604800
            )
