"""The builder, checked with independent readers: lxml's whole-tree parser + XSD, and botocore."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from unittest import mock

import boto3
import pytest
import xmlschema
from botocore.config import Config
from lxml import etree

import manifestkit
from manifestkit.errors import UsageError
from manifestkit.manifest import build_manifest_file, read_manifest, schema_path, write_manifest
from manifestkit.parts import PartPlan

from .conftest import BUCKET, CREDS, FROZEN, build, presigner


def lxml_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(schema_path())))


def test_schema_is_shipped_in_the_package():
    path = schema_path()
    assert path == Path(manifestkit.__file__).parent / "schemas" / "vm-import-manifest.xsd"
    assert path.is_file()
    xmlschema.XMLSchema(str(path))  # the XSD itself is a valid schema


@pytest.mark.parametrize(("size", "part"), [(1, 10), (10, 10), (11, 10), (1000, 300), (999, 1)])
def test_layout_against_whole_tree_oracle(size, part):
    doc = build(size, part)
    tree = etree.fromstring(doc)
    assert lxml_schema().validate(tree.getroottree()), lxml_schema().error_log
    assert xmlschema.XMLSchema(str(schema_path())).is_valid(io.BytesIO(doc))
    assert doc.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<manifest>')
    assert [c.tag for c in tree] == [
        "version",
        "file-format",
        "importer",
        "self-destruct-url",
        "import",
    ]
    assert tree.findtext("version") == "2010-11-15"
    assert tree.findtext("importer/name") == "manifestkit"
    assert tree.findtext("importer/version") == manifestkit.__version__
    assert tree.findtext("import/size") == str(size)
    parts = tree.findall("import/parts/part")
    expected = -(-size // part)
    assert tree.find("import/parts").get("count") == str(expected) == str(len(parts))
    position = 0
    for i, p in enumerate(parts):
        assert p.get("index") == str(i)
        r = p.find("byte-range")
        start, end = int(r.get("start")), int(r.get("end"))
        assert start == position and end >= start
        assert end - start + 1 == (part if i < expected - 1 else size - part * (expected - 1))
        position = end + 1
        assert [c.tag for c in p] == ["byte-range", "key", "head-url", "get-url", "delete-url"]
        assert p.findtext("key") == f"imports/0f0e0d0c-uuid/disk.img.part{i}"
    assert position == size


def test_urls_are_what_botocore_signs():
    doc = build(1000, 300)
    tree = etree.fromstring(doc)
    client = boto3.Session(
        aws_access_key_id=CREDS.access_key, aws_secret_access_key=CREDS.secret_key
    ).client(
        "s3",
        region_name="eu-west-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}),
    )

    def signed(op: str, key: str) -> str:
        with mock.patch(
            "botocore.auth.get_current_datetime", return_value=FROZEN.replace(tzinfo=None)
        ):
            return client.generate_presigned_url(
                op, Params={"Bucket": BUCKET, "Key": key}, ExpiresIn=604800
            )

    assert tree.findtext("self-destruct-url") == signed(
        "delete_object", "imports/0f0e0d0c-uuid/disk.imgmanifest.xml"
    )
    for p in tree.findall("import/parts/part"):
        key = p.findtext("key")
        assert p.findtext("head-url") == signed("head_object", key)
        assert p.findtext("get-url") == signed("get_object", key)
        assert p.findtext("delete-url") == signed("delete_object", key)


def test_special_characters_in_names_are_escaped():
    doc = build(100, 60, basename="a&b <c> \"d\" 'é'.raw", prefix="x y/&amp;")
    header, parts = read_manifest(doc)
    tree = etree.fromstring(doc)
    assert (
        tree.findtext("import/parts/part/key")
        == "x y/&amp;/0f0e0d0c-uuid/a&b <c> \"d\" 'é'.raw.part0"
    )
    assert parts[1].key.endswith(".raw.part1")
    assert header.size == 100


def test_control_character_in_key_refused():
    with pytest.raises(UsageError, match="control character"):
        build(100, 60, basename="bad\x01name.raw")


@pytest.mark.parametrize("fmt", ["QCOW2", "vmdk", ""])
def test_unknown_format_refused(fmt):
    with pytest.raises(UsageError, match="file format"):
        build(file_format=fmt)


def test_volume_size_checks():
    gib = 1024**3
    with pytest.raises(UsageError, match="too small: 2 GiB needed"):
        build(gib + 1, 512 * 1024**2, volume_gib=1)  # RAW: capacity is the file size
    build(gib + 1, 512 * 1024**2, volume_gib=2)
    with pytest.raises(UsageError, match="invalid"):
        build(volume_gib=0)
    with pytest.raises(UsageError, match="EBS maximum"):
        build(volume_gib=16385)
    plan = PartPlan(1000, 300, "d.vmdk", upload_id="u")
    with pytest.raises(UsageError, match="3 GiB needed"):
        write_manifest(
            io.BytesIO(),
            plan=plan,
            file_format="VMDK",
            bucket=BUCKET,
            presigner=presigner(),
            volume_gib=2,
            capacity_bytes=2 * gib + 1,
        )


def test_bad_bucket_refused():
    plan = PartPlan(1000, 300, "d.raw", upload_id="u")
    with pytest.raises(UsageError, match="invalid bucket name"):
        write_manifest(
            io.BytesIO(),
            plan=plan,
            file_format="RAW",
            bucket="Bad_Bucket",
            presigner=presigner(),
            volume_gib=1,
        )


def test_written_in_batches_not_as_one_tree():
    class Sink(io.RawIOBase):
        def __init__(self) -> None:
            self.writes = 0
            self.largest = 0

        def writable(self) -> bool:
            return True

        def write(self, b) -> int:
            self.writes += 1
            self.largest = max(self.largest, len(b))
            return len(b)

    sink = Sink()
    plan = PartPlan(5000, 1, "d.raw", upload_id="u")
    write_manifest(
        sink, plan=plan, file_format="RAW", bucket=BUCKET, presigner=presigner(), volume_gib=1
    )
    assert sink.writes > 5000 // 256
    assert sink.largest < 2 * 1024 * 1024  # a batch, far below the ~7 MB document


def test_build_manifest_file_mode_and_atomicity(tmp_path):
    target = tmp_path / "disk.imgmanifest.xml"
    plan = PartPlan(1000, 300, "disk.img", upload_id="u")
    build_manifest_file(
        target, plan=plan, file_format="RAW", bucket=BUCKET, presigner=presigner(), volume_gib=1
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    good = target.read_bytes()
    assert read_manifest(target)[0].part_count == 4
    # a failing build leaves the old file alone and no temp file behind
    with pytest.raises(UsageError):
        build_manifest_file(
            target, plan=plan, file_format="RAW", bucket=BUCKET, presigner=presigner(), volume_gib=0
        )
    assert target.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk.imgmanifest.xml"]


def test_build_manifest_file_mode_with_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        target = tmp_path / "m.xml"
        build_manifest_file(
            target,
            plan=PartPlan(10, 5, "d", upload_id="u"),
            file_format="RAW",
            bucket=BUCKET,
            presigner=presigner(),
            volume_gib=1,
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_path_style_custom_endpoint():
    doc = build(10, 5, endpoint="http://127.0.0.1:9000")
    header, parts = read_manifest(doc)
    assert header.self_destruct_url.startswith(
        "http://127.0.0.1:9000/my-bucket/imports/0f0e0d0c-uuid/disk.imgmanifest.xml?"
    )
    assert parts[0].get_url.startswith("http://127.0.0.1:9000/my-bucket/imports/")
