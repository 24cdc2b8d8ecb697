"""The verification pass and resume by ListObjectsV2, against the sandbox; HEAD where denied."""

from __future__ import annotations

import hashlib
import logging

import pytest

from manifestkit.errors import UploadError
from manifestkit.parts import PartPlan
from manifestkit.s3.part_upload import HeadParts, RemoteParts, list_existing, verify_uploaded

from .faultproxy import FaultProxy

PART = 1000
COUNT = 23  # keys part0..part22: part10..part19 list between part1 and part2


def _upload_parts(s3, bucket):
    plan = PartPlan(file_bytes=COUNT * PART - 300, part_size=PART, basename="d.raw")
    data = {p.index: bytes([p.index + 1]) * p.size for p in plan}
    for part in plan:
        s3.put_object(Bucket=bucket, Key=part.key, Body=data[part.index])
    s3.put_object(Bucket=bucket, Key=plan.manifest_key, Body=b"<manifest/>")
    return plan, {i: hashlib.md5(d).hexdigest() for i, d in data.items()}


def _deny_listing(bucket):
    def answer(method, path):
        return (
            (403, "AccessDenied") if method == "GET" and path.rstrip("/") == f"/{bucket}" else None
        )

    return answer


def test_verify_lists_instead_of_heading(s3server, bucket):
    s3 = s3server.client()
    plan, md5 = _upload_parts(s3, bucket)
    with FaultProxy(s3server.endpoint_url) as proxy:
        verify_uploaded(s3server.client(proxy.url), bucket, plan, md5.__getitem__, workers=4)
        assert proxy.requests("HEAD") == []
        assert len(proxy.requests("GET")) == 1  # one ListObjectsV2 page for 23 parts


@pytest.mark.parametrize("damage", ["missing", "short", "etag"])
def test_verify_by_listing_finds_a_bad_part(s3server, bucket, damage):
    s3 = s3server.client()
    plan, md5 = _upload_parts(s3, bucket)
    bad = plan.part(17)  # lists before part2: the merge must still place it
    if damage == "missing":
        s3.delete_object(Bucket=bucket, Key=bad.key)
        expected = "part 17 .* is missing after upload"
    elif damage == "short":
        s3.put_object(Bucket=bucket, Key=bad.key, Body=b"x" * (bad.size - 1))
        expected = f"part 17 .* is {bad.size - 1} bytes"
    else:  # same size, other bytes: only the ETag tells
        other = b"\xff" * bad.size
        s3.put_object(Bucket=bucket, Key=bad.key, Body=other)
        expected = f"part 17 .* with ETag {hashlib.md5(other).hexdigest()}"
    with FaultProxy(s3server.endpoint_url) as proxy:
        with pytest.raises(UploadError, match=expected):
            verify_uploaded(s3server.client(proxy.url), bucket, plan, md5.__getitem__, workers=4)
        assert proxy.requests("HEAD") == []


def test_verify_falls_back_to_head_when_listing_is_denied(s3server, bucket, caplog):
    s3 = s3server.client()
    plan, md5 = _upload_parts(s3, bucket)
    with FaultProxy(s3server.endpoint_url, answer=_deny_listing(bucket)) as proxy:
        client = s3server.client(proxy.url)
        with caplog.at_level(logging.INFO, logger="manifestkit"):
            verify_uploaded(client, bucket, plan, md5.__getitem__, workers=4)
        assert "denied" in caplog.text and "HEAD" in caplog.text
        assert len(proxy.requests("HEAD")) == COUNT
        assert [s.status for s in proxy.requests("GET", outcome="forced")] == [403]
        # the HEAD pass still catches a bad part
        s3.put_object(Bucket=bucket, Key=plan.part(3).key, Body=b"short")
        with pytest.raises(UploadError, match="part 3 .* is 5 bytes"):
            verify_uploaded(client, bucket, plan, md5.__getitem__, workers=4)


def test_resume_listing_and_its_head_fallback(s3server, bucket):
    s3 = s3server.client()
    plan, md5 = _upload_parts(s3, bucket)
    s3.delete_object(Bucket=bucket, Key=plan.part(12).key)
    s3.put_object(Bucket=bucket, Key=plan.part(4).key, Body=b"other")
    listed = list_existing(s3, bucket, plan)
    assert isinstance(listed, RemoteParts) and plan.manifest_key in listed
    with FaultProxy(s3server.endpoint_url, answer=_deny_listing(bucket)) as proxy:
        headed = list_existing(s3server.client(proxy.url), bucket, plan)
        assert isinstance(headed, HeadParts) and plan.manifest_key in headed
        for found in (listed, headed):
            kept = [p.index for p in plan if found.matches(p, bytes.fromhex(md5[p.index]))]
            assert kept == [i for i in range(COUNT) if i not in (4, 12)]
        assert len(proxy.requests("HEAD")) == COUNT + 1
