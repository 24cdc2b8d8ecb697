"""s3auth against botocore's own signers, without a server: the canonical request rebuilt from a
WSGI environ must be the one botocore signed, and ``verify`` must accept exactly its signature."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from manifestkit.sandbox.s3auth import (
    AuthError,
    Credential,
    Failure,
    canonical_request,
    parse_auth,
    verify,
)

KEYS = {"testing": Credential("testing", "testing-secret")}
CREDENTIALS = Credentials("testing", "testing-secret")
HOST = "127.0.0.1:9"


def environ_of(request: AWSRequest, method: str | None = None) -> dict[str, Any]:
    """What werkzeug would hand the app for this request."""
    parts = urlsplit(request.url)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method or request.method,
        "RAW_URI": parts.path + (f"?{parts.query}" if parts.query else ""),
        "QUERY_STRING": parts.query,
        "HTTP_HOST": parts.netloc,
    }
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value
        else:
            environ[f"HTTP_{key}"] = value
    return environ


def body_hash(body: bytes) -> Any:
    import hashlib

    return lambda: hashlib.sha256(body).hexdigest()


PATHS = [
    "/bucket/plain.part0",
    "/bucket/with%20space/and%2Bplus",
    "/bucket/%C3%A9t%C3%A9/~tilde",
    "/bucket/double//slash",
    "/bucket",
]
QUERIES = [
    "",
    "uploads",
    "partNumber=3&uploadId=a%2Fb%3D",
    "list-type=2&prefix=a%20b&delimiter=%2F",
]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("query", QUERIES)
def test_header_auth_matches_botocore(path: str, query: str) -> None:
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method="PUT", url=url, data=b"payload", headers={"Content-Type": "x/y"})
    signer = S3SigV4Auth(CREDENTIALS, "s3", "us-east-1")
    signer.add_auth(request)
    environ = environ_of(request)
    parsed = parse_auth(environ)
    assert parsed is not None and not parsed.query_auth
    # botocore's canonical request as it signed it (before it added the Authorization header)
    unsigned = AWSRequest(method=request.method, url=request.url, data=request.data)
    for name, value in request.headers.items():
        if name != "Authorization":
            unsigned.headers[name] = value
    botocore_canonical = signer.canonical_request(unsigned)
    ours = canonical_request(environ, parsed, request.headers["X-Amz-Content-SHA256"], s3=True)
    assert ours == botocore_canonical
    now = datetime.now(timezone.utc)
    result = verify(environ, parsed, KEYS, now, body_sha256=body_hash(b"payload"))
    assert (result.access_key, result.region, result.service) == ("testing", "us-east-1", "s3")


@pytest.mark.parametrize("path", PATHS)
def test_query_auth_matches_botocore(path: str) -> None:
    request = AWSRequest(method="GET", url=f"http://{HOST}{path}")
    S3SigV4QueryAuth(CREDENTIALS, "s3", "eu-west-1", expires=600).add_auth(request)
    environ = environ_of(request)
    parsed = parse_auth(environ)
    assert parsed is not None and parsed.query_auth and parsed.expires == 600
    now = datetime.now(timezone.utc)
    result = verify(environ, parsed, KEYS, now, body_sha256=body_hash(b""))
    assert result.expires_at is not None
    assert result.expires_at - result.signed_at == timedelta(seconds=600)
    for method in ("HEAD", "DELETE", "PUT"):
        with pytest.raises(AuthError) as caught:
            verify(environ_of(request, method), parsed, KEYS, now, body_sha256=body_hash(b""))
        assert caught.value.failure is Failure.SIGNATURE
    with pytest.raises(AuthError) as caught:
        verify(environ, parsed, KEYS, now + timedelta(seconds=601), body_sha256=body_hash(b""))
    assert caught.value.failure is Failure.EXPIRED


def test_ec2_style_signature_uses_the_body_hash() -> None:
    body = b"Action=DescribeInstances&Version=2016-11-15"
    request = AWSRequest(
        method="POST",
        url=f"http://{HOST}/",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    SigV4Auth(CREDENTIALS, "ec2", "us-east-1").add_auth(request)
    environ = environ_of(request)
    parsed = parse_auth(environ)
    assert parsed is not None and parsed.service == "ec2"
    now = datetime.now(timezone.utc)
    assert verify(environ, parsed, KEYS, now, body_sha256=body_hash(body)).service == "ec2"
    with pytest.raises(AuthError) as caught:
        verify(environ, parsed, KEYS, now, body_sha256=body_hash(body + b"&DryRun=true"))
    assert caught.value.failure is Failure.SIGNATURE


def test_no_auth_is_none_and_sigv2_is_refused() -> None:
    assert parse_auth({"REQUEST_METHOD": "GET", "QUERY_STRING": ""}) is None
    with pytest.raises(AuthError) as caught:
        parse_auth({"QUERY_STRING": "AWSAccessKeyId=a&Expires=1&Signature=x"})
    assert caught.value.failure is Failure.UNSUPPORTED
    with pytest.raises(AuthError) as caught:
        parse_auth({"QUERY_STRING": "", "HTTP_AUTHORIZATION": "AWS testing:abc="})
    assert caught.value.failure is Failure.UNSUPPORTED


def test_secret_never_in_repr() -> None:
    assert "testing-secret" not in repr(KEYS["testing"])
