"""The sandbox is as strict as S3 about time (issue 10 item 8): a presigned URL dated more than
15 minutes ahead is "not valid yet"; a header-signed request more than 15 minutes off the
server's clock is RequestTimeTooSkewed. Within the skew both work."""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from types import SimpleNamespace

import botocore.exceptions
import pytest

from manifestkit.s3.presign import Presigner


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def object_key(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"data")
    return "k"


def _url(sandbox, bucket, key, minutes_ahead):
    creds = SimpleNamespace(
        access_key=sandbox.access_key, secret_key=sandbox.secret_key, token=None
    )
    now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes_ahead)
    signer = Presigner(
        creds, sandbox.region, endpoint_url=sandbox.endpoint_url, addressing_style="path", now=now
    )
    return signer.url("GET", bucket, key)


def test_a_presigned_url_dated_in_the_future(sandbox, bucket, object_key, sandbox_clock):
    assert _get(_url(sandbox, bucket, object_key, 10)) == (200, b"data")
    status, body = _get(_url(sandbox, bucket, object_key, 20))
    assert status == 403
    assert b"<Code>AccessDenied</Code>" in body and b"Request is not valid yet" in body


@pytest.mark.parametrize("minutes", [16, -16])
def test_a_header_signed_request_off_by_more_than_15_minutes(
    s3, bucket, object_key, sandbox_clock, minutes
):
    sandbox_clock.advance(-minutes * 60)  # the server's clock moves: the client is off by that
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.head_object(Bucket=bucket, Key=object_key)
    assert caught.value.response["Error"]["Code"] in ("RequestTimeTooSkewed", "403")
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        s3.get_object(Bucket=bucket, Key=object_key)
    assert caught.value.response["Error"]["Code"] == "RequestTimeTooSkewed"
    assert caught.value.response["Error"]["MaxAllowedSkewMilliseconds"] == "900000"
    sandbox_clock.reset()
    sandbox_clock.advance(-14 * 60 if minutes > 0 else 14 * 60)
    assert s3.get_object(Bucket=bucket, Key=object_key)["Body"].read() == b"data"
