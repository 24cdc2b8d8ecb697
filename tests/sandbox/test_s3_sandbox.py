"""The sandbox S3 over real HTTP: boto3 works, and presigned URLs are checked as S3 checks them.

Oracles: botocore's own signer (``generate_presigned_url``, boto3 clients) and the bytes fetched
back over plain HTTP with urllib / http.client. Error codes are parsed from the XML body.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import boto3
import botocore
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError
from lxml import etree

ODD_KEY = "dir one/a+b=c&d~é//x.part0"


def http_call(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, bytes, Any]:
    request = urllib.request.Request(url, method=method, data=body)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def error_of(body: bytes) -> dict[str, str]:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root = etree.fromstring(body, parser)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def with_query(url: str, **changes: str) -> str:
    """The URL with query parameters replaced (None removes one), order kept."""
    parts = urlsplit(url)
    pairs = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name in changes:
            value = changes.pop(name)
            if value is None:
                continue
        pairs.append((name, value))
    pairs += [(name, value) for name, value in changes.items() if value is not None]
    return urlunsplit(parts._replace(query=urlencode(pairs, safe="/")))


def client_for(sandbox: Any, *, access_key: str, secret_key: str, **config: Any) -> Any:
    return boto3.client(
        "s3",
        region_name=sandbox.region,
        endpoint_url=sandbox.endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(
            signature_version=config.pop("signature_version", "s3v4"),
            s3={"addressing_style": "path"},
            retries={"mode": "standard", "max_attempts": 1},
            **config,
        ),
    )


# ---------------------------------------------------------------------------- boto3


def test_object_round_trip(s3: Any, bucket: str) -> None:
    data = os.urandom(100_000)
    put = s3.put_object(Bucket=bucket, Key=ODD_KEY, Body=data)
    assert s3.get_object(Bucket=bucket, Key=ODD_KEY)["Body"].read() == data
    head = s3.head_object(Bucket=bucket, Key=ODD_KEY)
    assert head["ContentLength"] == len(data)
    assert head["ETag"] == put["ETag"]
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": ODD_KEY})
    assert s3.get_object(Bucket=bucket, Key="copy")["Body"].read() == data
    listed = s3.list_objects_v2(Bucket=bucket)
    assert sorted(item["Key"] for item in listed["Contents"]) == sorted([ODD_KEY, "copy"])
    s3.delete_object(Bucket=bucket, Key=ODD_KEY)
    with pytest.raises(ClientError) as caught:
        s3.head_object(Bucket=bucket, Key=ODD_KEY)
    assert caught.value.response["Error"]["Code"] == "404"


def test_range_get(s3: Any, bucket: str) -> None:
    data = bytes(range(256)) * 64
    s3.put_object(Bucket=bucket, Key="ranged", Body=data)
    got = s3.get_object(Bucket=bucket, Key="ranged", Range="bytes=100-299")["Body"].read()
    assert got == data[100:300]


def test_bucket_in_another_region_reports_it(s3: Any, sandbox: Any) -> None:
    name = f"elsewhere-{os.urandom(6).hex()}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"
    assert sandbox.region == "us-east-1"


def test_multipart_upload_file(s3: Any, bucket: str, tmp_path: Any) -> None:
    path = tmp_path / "big.bin"
    data = os.urandom(12 * 1024 * 1024 + 123)
    path.write_bytes(data)
    config = TransferConfig(
        multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024
    )
    s3.upload_file(str(path), bucket, "big.bin", Config=config)
    assert s3.get_object(Bucket=bucket, Key="big.bin")["Body"].read() == data


def test_concurrent_uploads(sandbox: Any, s3: Any, bucket: str) -> None:
    blobs = {f"part{i}": os.urandom(1024 * 1024 + i) for i in range(8)}
    errors: list[BaseException] = []

    def put(key: str) -> None:
        try:
            client = client_for(
                sandbox, access_key=sandbox.access_key, secret_key=sandbox.secret_key
            )
            client.put_object(Bucket=bucket, Key=key, Body=blobs[key])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(key,)) for key in blobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    for key, data in blobs.items():
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


# ---------------------------------------------------------------------------- presigned URLs


@pytest.fixture
def stored(s3: Any, bucket: str) -> tuple[str, str, bytes]:
    data = os.urandom(4096)
    s3.put_object(Bucket=bucket, Key=ODD_KEY, Body=data)
    return bucket, ODD_KEY, data


def presign(s3: Any, method: str, bucket: str, key: str, expires: int = 300) -> str:
    return s3.generate_presigned_url(
        method, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
    )


def test_presigned_get_head_delete_work(s3: Any, stored: tuple[str, str, bytes]) -> None:
    bucket, key, data = stored
    status, body, _ = http_call(presign(s3, "get_object", bucket, key))
    assert (status, body) == (200, data)
    status, body, headers = http_call(presign(s3, "head_object", bucket, key), "HEAD")
    assert status == 200 and int(headers["Content-Length"]) == len(data)
    status, _, _ = http_call(presign(s3, "delete_object", bucket, key), "DELETE")
    assert status == 204
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_presigned_put_stores_the_bytes(s3: Any, bucket: str) -> None:
    data = os.urandom(2048)
    status, _, _ = http_call(presign(s3, "put_object", bucket, "via-url"), "PUT", data)
    assert status == 200
    assert s3.get_object(Bucket=bucket, Key="via-url")["Body"].read() == data


def test_presigned_range_get_with_http_client(s3: Any, stored: tuple[str, str, bytes]) -> None:
    bucket, key, data = stored
    parts = urlsplit(presign(s3, "get_object", bucket, key))
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}", headers={"Range": "bytes=10-19"})
        response = connection.getresponse()
        assert response.status == 206
        assert response.read() == data[10:20]
    finally:
        connection.close()


def later_by_one_second(url: str) -> str:
    from datetime import datetime, timedelta

    signed = dict(parse_qsl(urlsplit(url).query))["X-Amz-Date"]
    when = datetime.strptime(signed, "%Y%m%dT%H%M%SZ") + timedelta(seconds=1)
    return with_query(url, **{"X-Amz-Date": when.strftime("%Y%m%dT%H%M%SZ")})


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda url: url[:-1] + ("0" if url[-1] != "0" else "1"), id="signature"),
        pytest.param(lambda url: url.replace(".part0?", ".part1?"), id="key"),
        pytest.param(lambda url: with_query(url, **{"X-Amz-Expires": "301"}), id="expiry"),
        pytest.param(later_by_one_second, id="date"),
        pytest.param(lambda url: with_query(url, extra="1"), id="added-parameter"),
        pytest.param(lambda url: url.replace("127.0.0.1", "localhost"), id="host"),
    ],
)
def test_tampered_urls_are_refused(s3: Any, stored: tuple[str, str, bytes], tamper: Any) -> None:
    bucket, key, _ = stored
    url = presign(s3, "get_object", bucket, key)
    assert http_call(url)[0] == 200
    tampered = tamper(url)
    assert tampered != url
    status, body, _ = http_call(tampered)
    assert status == 403
    error = error_of(body)
    assert error["Code"] == "SignatureDoesNotMatch"
    assert error["RequestId"]


@pytest.mark.parametrize(
    ("signed_for", "used_with"),
    [("get_object", "DELETE"), ("head_object", "GET"), ("get_object", "PUT")],
)
def test_method_swap_is_refused(
    s3: Any, stored: tuple[str, str, bytes], signed_for: str, used_with: str
) -> None:
    bucket, key, data = stored
    url = presign(s3, signed_for, bucket, key)
    status, body, _ = http_call(url, used_with, b"evil" if used_with == "PUT" else None)
    assert status == 403
    assert error_of(body)["Code"] == "SignatureDoesNotMatch"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == data


def test_signature_mismatch_explains_the_canonical_request(
    s3: Any, stored: tuple[str, str, bytes]
) -> None:
    bucket, key, _ = stored
    status, body, _ = http_call(presign(s3, "get_object", bucket, key), "DELETE")
    error = error_of(body)
    assert error["CanonicalRequest"].startswith("DELETE\n/")
    assert error["StringToSign"].startswith("AWS4-HMAC-SHA256\n")
    assert error["AWSAccessKeyId"] == "testing"


def test_expired_url(s3: Any, stored: tuple[str, str, bytes], sandbox_clock: Any) -> None:
    bucket, key, data = stored
    url = presign(s3, "get_object", bucket, key, expires=60)
    sandbox_clock.advance(30)
    assert http_call(url)[:2] == (200, data)
    sandbox_clock.advance(31)
    status, body, _ = http_call(url)
    assert status == 403
    error = error_of(body)
    assert error["Code"] == "AccessDenied"
    assert error["Message"] == "Request has expired"
    assert error["X-Amz-Expires"] == "60"
    sandbox_clock.reset()
    assert http_call(url)[0] == 200


def test_expired_head_has_no_body(
    s3: Any, stored: tuple[str, str, bytes], sandbox_clock: Any
) -> None:
    bucket, key, _ = stored
    url = presign(s3, "head_object", bucket, key, expires=5)
    sandbox_clock.advance(3600)
    status, body, headers = http_call(url, "HEAD")
    assert (status, body) == (403, b"")
    assert headers["x-amz-request-id"]


def test_seven_day_cap(s3: Any, stored: tuple[str, str, bytes]) -> None:
    bucket, key, data = stored
    assert http_call(presign(s3, "get_object", bucket, key, expires=604800))[:2] == (200, data)
    status, body, _ = http_call(presign(s3, "get_object", bucket, key, expires=604801))
    assert status == 400
    error = error_of(body)
    assert error["Code"] == "AuthorizationQueryParametersError"
    assert "604800" in error["Message"]


@pytest.mark.parametrize(
    "change",
    [
        {"X-Amz-Credential": None},
        {"X-Amz-Signature": None},
        {"X-Amz-Expires": "soon"},
        {"X-Amz-Expires": "-1"},
        {"X-Amz-Date": "yesterday"},
        {"X-Amz-Algorithm": "AWS4-HMAC-SHA1"},
        {"X-Amz-Credential": "testing/20260101/us-east-1/s3"},
        {"X-Amz-SignedHeaders": "range"},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items()),
)
def test_malformed_query_auth(s3: Any, stored: tuple[str, str, bytes], change: dict) -> None:
    bucket, key, _ = stored
    status, body, _ = http_call(with_query(presign(s3, "get_object", bucket, key), **change))
    assert status == 400
    assert error_of(body)["Code"] == "AuthorizationQueryParametersError"


def test_credential_date_must_match(s3: Any, stored: tuple[str, str, bytes]) -> None:
    bucket, key, _ = stored
    url = presign(s3, "get_object", bucket, key)
    credential = dict(parse_qsl(urlsplit(url).query))["X-Amz-Credential"]
    moved = credential.replace(credential.split("/")[1], "20200101")
    status, body, _ = http_call(with_query(url, **{"X-Amz-Credential": moved}))
    assert status == 400
    assert "Invalid credential date" in error_of(body)["Message"]


def test_presigned_with_unknown_key(sandbox: Any, stored: tuple[str, str, bytes]) -> None:
    bucket, key, _ = stored
    stranger = client_for(sandbox, access_key="AKIASTRANGER", secret_key="whatever")
    status, body, _ = http_call(presign(stranger, "get_object", bucket, key))
    assert status == 403
    error = error_of(body)
    assert error["Code"] == "InvalidAccessKeyId"
    assert error["AWSAccessKeyId"] == "AKIASTRANGER"


def test_presigned_with_wrong_secret(sandbox: Any, stored: tuple[str, str, bytes]) -> None:
    bucket, key, _ = stored
    wrong = client_for(sandbox, access_key=sandbox.access_key, secret_key="not-the-secret")
    status, body, _ = http_call(presign(wrong, "get_object", bucket, key))
    assert status == 403
    assert error_of(body)["Code"] == "SignatureDoesNotMatch"


def test_sigv2_urls_are_refused(sandbox: Any, stored: tuple[str, str, bytes]) -> None:
    bucket, key, _ = stored
    v2 = client_for(
        sandbox,
        access_key=sandbox.access_key,
        secret_key=sandbox.secret_key,
        signature_version="s3",
    )
    url = presign(v2, "get_object", bucket, key)
    assert "Signature=" in url and "X-Amz-Algorithm" not in url
    status, body, _ = http_call(url)
    assert status == 400
    assert error_of(body)["Code"] == "InvalidRequest"


def test_both_auth_mechanisms_are_refused(s3: Any, stored: tuple[str, str, bytes]) -> None:
    bucket, key, _ = stored
    request = urllib.request.Request(
        presign(s3, "get_object", bucket, key),
        headers={
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/"
            "aws4_request, SignedHeaders=host, Signature=00"
        },
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert error_of(caught.value.read())["Code"] == "InvalidArgument"


# ---------------------------------------------------------------------------- header auth


def test_wrong_secret_key(sandbox: Any, bucket: str) -> None:
    wrong = client_for(sandbox, access_key=sandbox.access_key, secret_key="not-the-secret")
    with pytest.raises(ClientError) as caught:
        wrong.put_object(Bucket=bucket, Key="nope", Body=b"x")
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as caught:
        wrong.list_objects_v2(Bucket=bucket)
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_unknown_access_key(sandbox: Any, bucket: str) -> None:
    stranger = client_for(sandbox, access_key="AKIASTRANGER", secret_key="whatever")
    with pytest.raises(ClientError) as caught:
        stranger.list_objects_v2(Bucket=bucket)
    assert caught.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_extra_credential_is_accepted(sandbox: Any, bucket: str) -> None:
    sandbox.add_credential("AKIASECOND", "second-secret")
    second = client_for(sandbox, access_key="AKIASECOND", secret_key="second-secret")
    second.put_object(Bucket=bucket, Key="from-second", Body=b"2")
    assert second.get_object(Bucket=bucket, Key="from-second")["Body"].read() == b"2"


def test_unauthenticated_requests_are_refused(sandbox: Any, stored: tuple[str, str, bytes]) -> None:
    bucket, key, _ = stored
    status, body, _ = http_call(f"{sandbox.endpoint_url}/{bucket}/{urllib.parse.quote(key)}")
    assert status == 403
    assert error_of(body)["Code"] == "AccessDenied"
    anonymous = client_for(
        sandbox, access_key="x", secret_key="y", signature_version=botocore.UNSIGNED
    )
    with pytest.raises(ClientError) as caught:
        anonymous.list_objects_v2(Bucket=bucket)
    assert caught.value.response["Error"]["Code"] == "AccessDenied"


def _chunked_body(data: bytes, trailer: str) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n0\r\n" + trailer.encode() + b"\r\n\r\n"


@pytest.mark.parametrize("secret_ok", [True, False], ids=["signed", "wrong-secret"])
def test_aws_chunked_streaming_upload(sandbox: Any, s3: Any, bucket: str, secret_ok: bool) -> None:
    """What boto3 sends over HTTPS: aws-chunked body, unsigned payload, CRC32 in a trailer."""
    import base64
    import zlib

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    data = os.urandom(3000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body = _chunked_body(data, f"x-amz-checksum-crc32:{crc}")
    url = f"{sandbox.endpoint_url}/{bucket}/streamed"
    request = AWSRequest(
        method="PUT",
        url=url,
        data=body,
        headers={
            "Content-Encoding": "aws-chunked",
            "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Trailer": "x-amz-checksum-crc32",
            "X-Amz-Content-SHA256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
            "Content-Length": str(len(body)),
        },
    )
    request.context["checksum"] = {
        "request_algorithm": {"in": "trailer", "algorithm": "crc32", "name": "x-amz-checksum-crc32"}
    }
    secret = sandbox.secret_key if secret_ok else "not-the-secret"
    S3SigV4Auth(Credentials(sandbox.access_key, secret), "s3", sandbox.region).add_auth(request)
    assert request.headers["X-Amz-Content-SHA256"] == "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
    prepared = request.prepare()
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("PUT", parts.path, body=body, headers=dict(prepared.headers))
        response = connection.getresponse()
        answer = response.read()
    finally:
        connection.close()
    if secret_ok:
        assert response.status == 200, answer
        assert s3.get_object(Bucket=bucket, Key="streamed")["Body"].read() == data
    else:
        assert response.status == 403
        assert error_of(answer)["Code"] == "SignatureDoesNotMatch"


def test_s3_header_auth_needs_content_sha256(sandbox: Any, bucket: str) -> None:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    # plain SigV4 (not S3's variant) signs the body hash but sends no x-amz-content-sha256
    request = AWSRequest(method="GET", url=f"{sandbox.endpoint_url}/{bucket}")
    SigV4Auth(Credentials(sandbox.access_key, sandbox.secret_key), "s3", sandbox.region).add_auth(
        request
    )
    assert "X-Amz-Content-SHA256" not in request.headers
    status, body, _ = http_call_with_headers(request.url, dict(request.headers))
    assert status == 400
    assert "x-amz-content-sha256" in error_of(body)["Message"]


def http_call_with_headers(url: str, headers: dict[str, str]) -> tuple[int, bytes, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


# ---------------------------------------------------------------------------- control endpoint


def test_clock_control_endpoint(
    s3: Any, stored: tuple[str, str, bytes], sandbox: Any, sandbox_clock: Any
) -> None:
    bucket, key, _ = stored
    url = presign(s3, "get_object", bucket, key, expires=600)

    def control(document: Any) -> tuple[int, Any]:
        status, body, _ = http_call(
            sandbox.control_url + "clock", "POST", json.dumps(document).encode()
        )
        return status, json.loads(body)

    status, state = control({"advance": 601})
    assert status == 200 and state["offset_seconds"] == pytest.approx(601)
    assert error_of(http_call(url)[1])["Message"] == "Request has expired"
    assert control({"reset": True})[1]["offset_seconds"] == 0
    assert http_call(url)[0] == 200
    status, state = control({"set": "2030-01-01T00:00:00Z"})
    assert status == 200 and state["now"].startswith("2030-01-01T00:00")
    assert http_call(url)[0] == 403
    assert control({"advance": "soon"})[0] == 400
    assert control({"advance": 1, "reset": True})[0] == 400
    status, body, _ = http_call(sandbox.control_url + "clock", "POST", b"not json")
    assert status == 400
    status, body, _ = http_call(sandbox.control_url + "health")
    assert status == 200 and json.loads(body)["s3_endpoint_url"] == sandbox.s3_endpoint_url


# ---------------------------------------------------------------------------- bucket region


@pytest.fixture
def west_bucket(s3: Any) -> str:
    name = f"west-{os.urandom(8).hex()}"
    s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return name


def test_url_signed_for_another_region_is_refused(sandbox: Any, s3: Any, west_bucket: str) -> None:
    s3.put_object(Bucket=west_bucket, Key="k", Body=b"west")  # botocore follows S3's redirect
    status, body, _ = http_call(presign(s3, "get_object", west_bucket, "k"))
    assert status == 400
    error = error_of(body)
    assert error["Code"] == "AuthorizationQueryParametersError"
    assert error["Region"] == "eu-west-1"
    west = boto3.client(
        "s3",
        region_name="eu-west-1",
        endpoint_url=sandbox.endpoint_url,
        aws_access_key_id=sandbox.access_key,
        aws_secret_access_key=sandbox.secret_key,
        config=Config(signature_version="s3v4"),
    )
    assert http_call(presign(west, "get_object", west_bucket, "k"))[:2] == (200, b"west")


def test_header_auth_in_another_region_names_the_right_one(
    sandbox: Any, s3: Any, west_bucket: str
) -> None:
    # signed by botocore's own S3 signer for us-east-1, sent without botocore's redirect handling
    status, body, headers = http_call_with_headers(
        f"{sandbox.endpoint_url}/{west_bucket}?list-type=2",
        _signed_headers(sandbox, f"{sandbox.endpoint_url}/{west_bucket}?list-type=2"),
    )
    assert status == 400
    error = error_of(body)
    assert error["Code"] == "AuthorizationHeaderMalformed"
    assert error["Region"] == "eu-west-1"
    assert headers["x-amz-bucket-region"] == "eu-west-1"
    assert s3.get_bucket_location(Bucket=west_bucket)["LocationConstraint"] == "eu-west-1"


def _signed_headers(sandbox: Any, url: str) -> dict[str, str]:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest(method="GET", url=url)
    credentials = Credentials(sandbox.access_key, sandbox.secret_key)
    S3SigV4Auth(credentials, "s3", "us-east-1").add_auth(request)
    return dict(request.headers)
