"""Manifests built for the tests: real presigned URLs (frozen clock), small part sizes."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable

import pytest
from botocore.credentials import ReadOnlyCredentials
from lxml import etree

from manifestkit.manifest import write_manifest
from manifestkit.parts import PartPlan
from manifestkit.s3.presign import Presigner

XXE_DOC = b"""<?xml version="1.0"?>
<!DOCTYPE manifest [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<manifest><version>&xxe;</version></manifest>"""
FROZEN = dt.datetime(2026, 11, 27, 12, 0, 0, tzinfo=dt.timezone.utc)
CREDS = ReadOnlyCredentials("AKIDMANIFEST", "manifest-secret", None)
BUCKET = "my-bucket"


def presigner(endpoint: str | None = None, **kwargs) -> Presigner:
    return Presigner(CREDS, "eu-west-1", endpoint_url=endpoint, now=FROZEN, **kwargs)


def build(
    file_bytes: int = 1000,
    part_size: int = 300,
    *,
    file_format: str = "RAW",
    volume_gib: int = 1,
    basename: str = "disk.img",
    prefix: str = "imports",
    endpoint: str | None = None,
    signer: Presigner | None = None,
) -> bytes:
    plan = PartPlan(file_bytes, part_size, basename, prefix, upload_id="0f0e0d0c-uuid")
    out = io.BytesIO()
    write_manifest(
        out,
        plan=plan,
        file_format=file_format,
        bucket=BUCKET,
        presigner=signer or presigner(endpoint),
        volume_gib=volume_gib,
    )
    return out.getvalue()


def mutate(doc: bytes, change: Callable[[etree._Element], None]) -> bytes:
    """Parse (tests only: small documents), apply ``change`` to the root, serialise."""
    root = etree.fromstring(doc)
    change(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@pytest.fixture
def manifest_bytes() -> bytes:
    return build()
