"""The presigner against botocore itself: same credentials, same frozen clock, same string."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import logging
from unittest import mock

import boto3
import pytest
from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials, ReadOnlyCredentials

from manifestkit.aws import AwsSettings
from manifestkit.errors import CredentialsError, UsageError
from manifestkit.s3 import presign
from manifestkit.s3.bucket_names import bucket_name_problem, validate_bucket_name
from manifestkit.s3.presign import (
    MAX_EXPIRES,
    PresignedUrlError,
    PresignedUrlInfo,
    Presigner,
    parse_presigned_url,
    signed_method,
    verify_presigned_url,
)


@pytest.fixture(autouse=True)
def _log_reaches_caplog(monkeypatch):
    """The CLI's main() stops 'manifestkit' propagating (its own handler); caplog needs it."""
    monkeypatch.setattr(logging.getLogger("manifestkit"), "propagate", True)


FROZEN = dt.datetime(2026, 11, 27, 13, 59, 58)  # naive UTC, as botocore's clock returns it
ACCESS, SECRET, TOKEN = (
    "AKIDEXAMPLE",
    "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    "FwoG/Zm9v+YmFy==",
)

KEYS = [
    "k",
    "disk.vmdk.part0",
    "imports/2f1c/disk.vmdkmanifest.xml",
    "a b/c d.vmdk.part12",
    "plus+sign/x+y",
    "tilde~star*paren()bang!quote'",
    "percent%20literal/%2F/%",
    "unicode/é/日本語/ünï.vmdk",
    "deep/" + "/".join(f"level{i}" for i in range(40)) + "/leaf",
    'sym/&=?#;:@$,[]{}|\\^`"<>',
    "dots/./../x",
    "double//slash/",
    "/leading-slash",
    "emoji/🙂.part1",
    "tab\tand newline\n",
]
BUCKETS = ["my-bucket", "bucket.with.dots", "123numeric"]
REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
ENDPOINTS = [
    None,
    "http://127.0.0.1:9000",
    "http://localhost:45678",
    "https://s3.example.com:8443",
    "https://minio.example.com",
    "http://[::1]:9000",
]
STYLES = ["auto", "virtual", "path"]
OPS = [
    ("HEAD", "head_object"),
    ("GET", "get_object"),
    ("DELETE", "delete_object"),
    ("PUT", "put_object"),
]


def botocore_client(region: str, endpoint: str | None, style: str, token: str | None):
    """A botocore client configured the way our presigner addresses S3.

    With no endpoint our presigner always uses the regional AWS endpoint, never the legacy global
    one: botocore does the same with ``virtual`` addressing and ``us_east_1_regional_endpoint``.
    """
    s3 = {"addressing_style": style}
    if endpoint is None:
        s3 = {
            "addressing_style": "path" if style == "path" else "virtual",
            "us_east_1_regional_endpoint": "regional",
        }
    session = boto3.Session(
        aws_access_key_id=ACCESS, aws_secret_access_key=SECRET, aws_session_token=token
    )
    return session.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        config=Config(signature_version="s3v4", s3=s3),
    )


def botocore_url(client, op: str, bucket: str, key: str, expires: int) -> str:
    with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN):
        return client.generate_presigned_url(
            op, Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
        )


def botocore_quirk(endpoint: str | None, style: str, bucket: str) -> bool:
    """botocore puts a dotted bucket in front of an IP address (http://my.bucket.127.0.0.1:9000),
    a host name that cannot resolve; we use path style there. Documented, not compared."""
    return (
        endpoint is not None
        and style == "virtual"
        and "." in bucket
        and any(ip in endpoint for ip in ("127.0.0.1", "[::1]"))
    )


CASES = [
    (region, endpoint, style, token)
    for region, endpoint, style, token in itertools.product(
        REGIONS, ENDPOINTS, STYLES, [None, TOKEN]
    )
    if not (endpoint is not None and region == "ap-southeast-2")  # keep the matrix small
]


@pytest.mark.parametrize(("region", "endpoint", "style", "token"), CASES)
def test_byte_identical_to_botocore(region, endpoint, style, token):
    client = botocore_client(region, endpoint, style, token)
    ours = Presigner(
        ReadOnlyCredentials(ACCESS, SECRET, token),
        region,
        endpoint_url=endpoint,
        addressing_style=style,
        expires_in=MAX_EXPIRES,
        now=FROZEN,
    )
    compared = 0
    for bucket, key, (method, op) in itertools.product(BUCKETS, KEYS, OPS):
        if botocore_quirk(endpoint, style, bucket):
            continue
        expected = botocore_url(client, op, bucket, key, MAX_EXPIRES)
        assert ours.url(method, bucket, key) == expected, (bucket, key, method)
        compared += 1
    assert compared >= len(KEYS) * len(OPS) * 2


@pytest.mark.parametrize("expires", [1, 3600, 86399, MAX_EXPIRES])
def test_expiry_values_match_botocore(expires):
    client = botocore_client("eu-west-1", None, "virtual", None)
    ours = Presigner(
        ReadOnlyCredentials(ACCESS, SECRET, None), "eu-west-1", expires_in=expires, now=FROZEN
    )
    assert ours.url("GET", "b-1", "x/y") == botocore_url(
        client, "get_object", "b-1", "x/y", expires
    )


def test_aware_and_naive_now_sign_the_same():
    creds = ReadOnlyCredentials(ACCESS, SECRET, None)
    naive = Presigner(creds, "eu-west-1", now=FROZEN)
    aware = Presigner(
        creds,
        "eu-west-1",
        now=FROZEN.replace(tzinfo=dt.timezone.utc).astimezone(dt.timezone(dt.timedelta(hours=5))),
    )
    assert naive.url("GET", "b-1", "k") == aware.url("GET", "b-1", "k")


def test_botocore_signer_verifies_canonical_request():
    """botocore's own S3SigV4QueryAuth, fed the same request and timestamp, gives our signature."""
    ours = Presigner(
        ReadOnlyCredentials(ACCESS, SECRET, TOKEN),
        "eu-west-1",
        endpoint_url="http://127.0.0.1:9000",
        now=FROZEN,
    )
    for key in KEYS:
        for method in ("HEAD", "GET", "DELETE"):
            url = ours.url(method, "my-bucket", key)
            unsigned = url.split("?", 1)[0]
            request = AWSRequest(method=method, url=unsigned)
            signer = S3SigV4QueryAuth(
                Credentials(ACCESS, SECRET, TOKEN), "s3", "eu-west-1", expires=MAX_EXPIRES
            )
            with mock.patch("botocore.auth.get_current_datetime", return_value=FROZEN):
                signer.add_auth(request)
            assert request.url == url


def test_never_the_global_endpoint():
    for region in ("us-east-1", "eu-west-1"):
        p = Presigner(ReadOnlyCredentials(ACCESS, SECRET, None), region, now=FROZEN)
        url = p.url("GET", "my-bucket", "k")
        assert url.startswith(f"https://my-bucket.s3.{region}.amazonaws.com/k?")
        dotted = p.url("GET", "my.bucket", "k")
        assert dotted.startswith(f"https://s3.{region}.amazonaws.com/my.bucket/k?")


def test_signing_key_derived_once(monkeypatch):
    calls = []
    real = presign.signing_key
    monkeypatch.setattr(presign, "signing_key", lambda *a: calls.append(a) or real(*a))
    p = Presigner(ReadOnlyCredentials(ACCESS, SECRET, None), "eu-west-1", now=FROZEN)
    for i in range(2000):
        p.urls(("HEAD", "GET", "DELETE"), "my-bucket", f"x/disk.part{i}")
    assert len(calls) == 1


@pytest.mark.parametrize("expires", [0, -1, MAX_EXPIRES + 1, 10**9])
def test_expiry_out_of_range_refused(expires):
    with pytest.raises(UsageError, match="out of range"):
        Presigner(ReadOnlyCredentials(ACCESS, SECRET, None), "eu-west-1", expires_in=expires)


def test_bad_constructor_arguments():
    creds = ReadOnlyCredentials(ACCESS, SECRET, None)
    with pytest.raises(UsageError, match="region"):
        Presigner(creds, "")
    with pytest.raises(UsageError, match="addressing"):
        Presigner(creds, "eu-west-1", addressing_style="sideways")
    with pytest.raises(UsageError, match="endpoint"):
        Presigner(creds, "eu-west-1", endpoint_url="ftp://x")
    with pytest.raises(ValueError):
        Presigner(creds, "eu-west-1").url("POST", "b-1", "k")


# -- from_session -----------------------------------------------------------------------------


def test_from_session_uses_boto3_chain_and_configured_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9999")
    session = boto3.Session(region_name="eu-west-1")
    p = Presigner.from_session(session, AwsSettings(), now=FROZEN)
    url = p.url("GET", "my-bucket", "k")
    assert url.startswith("http://127.0.0.1:9999/my-bucket/k?")
    assert "X-Amz-Credential=testing%2F" in url  # conftest's throwaway key
    flag = Presigner.from_session(
        session, AwsSettings(s3_endpoint_url="http://localhost:1234"), now=FROZEN
    )
    assert flag.url("GET", "my-bucket", "k").startswith("http://localhost:1234/my-bucket/k?")


def test_from_session_without_credentials(no_aws_credentials):
    session = boto3.Session(region_name="eu-west-1")
    with pytest.raises(CredentialsError, match="no AWS credentials"):
        Presigner.from_session(session, AwsSettings())


def test_from_session_without_region(monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(UsageError, match="region"):
        Presigner.from_session(boto3.Session(), AwsSettings())


def test_warns_for_session_token(caplog):
    session = boto3.Session(
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
        region_name="eu-west-1",
    )
    with caplog.at_level(logging.WARNING, logger="manifestkit"):
        Presigner.from_session(session, AwsSettings(), now=FROZEN)
    assert "temporary" in caplog.text
    assert SECRET not in caplog.text and TOKEN not in caplog.text


def test_warns_when_credentials_expire_before_urls(caplog):
    with caplog.at_level(logging.WARNING, logger="manifestkit"):
        presign.warn_if_credentials_expire(
            token=TOKEN,
            credentials_expire_at=dt.datetime(2026, 11, 27, 15, 0, tzinfo=dt.timezone.utc),
            urls_expire_at=dt.datetime(2026, 12, 4, 14, 0, tzinfo=dt.timezone.utc),
        )
    assert "expire at 2026-11-27T15:00:00+00:00" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="manifestkit"):
        presign.warn_if_credentials_expire(
            token=TOKEN,
            credentials_expire_at=dt.datetime(2026, 12, 30, tzinfo=dt.timezone.utc),
            urls_expire_at=dt.datetime(2026, 12, 4, 14, 0, tzinfo=dt.timezone.utc),
        )
    assert caplog.text == ""


def test_no_warning_for_long_term_credentials(caplog):
    session = boto3.Session(
        aws_access_key_id=ACCESS, aws_secret_access_key=SECRET, region_name="eu-west-1"
    )
    with caplog.at_level(logging.WARNING, logger="manifestkit"):
        Presigner.from_session(session, AwsSettings(), now=FROZEN)
    assert caplog.text == ""


# -- reading URLs back ------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:9000"])
@pytest.mark.parametrize("key", KEYS)
def test_parse_presigned_url_reads_botocore_urls(endpoint, key):
    client = botocore_client("eu-west-1", endpoint, "auto", TOKEN)
    url = botocore_url(client, "get_object", "my-bucket", key, 3600)
    info = parse_presigned_url(url)
    assert info.bucket == "my-bucket"
    assert info.key == key
    assert info.access_key == ACCESS
    assert info.region == "eu-west-1" and info.service == "s3"
    assert info.credential_scope == "20261127/eu-west-1/s3/aws4_request"
    assert info.signed_at == FROZEN.replace(tzinfo=dt.timezone.utc)
    assert info.expires_at == info.signed_at + dt.timedelta(seconds=3600)
    assert info.has_security_token
    assert not info.is_expired(FROZEN + dt.timedelta(seconds=3599))
    assert info.is_expired(FROZEN + dt.timedelta(seconds=3600))
    assert signed_method(info, SECRET) == "GET"
    assert verify_presigned_url(url, "GET", SECRET)
    assert not verify_presigned_url(url, "HEAD", SECRET)
    assert not verify_presigned_url(url, "GET", SECRET + "x")


@pytest.mark.parametrize("endpoint", [None, "http://127.0.0.1:9000"])
def test_parsed_url_info_is_the_dataclass_its_init_would_make(endpoint):
    """parse_presigned_url fills the frozen instance's __dict__ (speed): the same object."""
    client = botocore_client("eu-west-1", endpoint, "auto", TOKEN)
    info = parse_presigned_url(botocore_url(client, "get_object", "my-bucket", "a/b c", 3600))
    fields = {f.name: getattr(info, f.name) for f in dataclasses.fields(PresignedUrlInfo)}
    made = PresignedUrlInfo(**fields)
    assert info == made and hash(info) == hash(made) and repr(info) == repr(made)
    assert vars(info) == vars(made)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.key = "other"  # type: ignore[misc]


def test_is_expired_at_the_instant_whatever_the_clock():
    """Expiry is an instant: naive clocks are UTC, aware ones any zone, microseconds count."""
    signer = Presigner(
        ReadOnlyCredentials(ACCESS, SECRET, None), "eu-west-1", expires_in=60, now=FROZEN
    )
    info = parse_presigned_url(signer.url("GET", "my-bucket", "k"))
    edge = FROZEN + dt.timedelta(seconds=60)
    tick = dt.timedelta(microseconds=1)
    assert not info.is_expired(edge - tick)
    assert info.is_expired(edge)
    assert info.is_expired(edge + tick)
    paris = dt.timezone(dt.timedelta(hours=2))
    aware = edge.replace(tzinfo=dt.timezone.utc).astimezone(paris)
    assert not info.is_expired(aware - tick)
    assert info.is_expired(aware)


def test_parse_with_bucket_hint_on_virtual_custom_endpoint():
    client = botocore_client("eu-west-1", "http://localhost:9000", "virtual", None)
    url = botocore_url(client, "delete_object", "my-bucket", "a/b c", 60)
    assert url.startswith("http://my-bucket.localhost:9000/")
    info = parse_presigned_url(url, bucket="my-bucket")
    assert (info.bucket, info.key) == ("my-bucket", "a/b c")
    assert signed_method(info, SECRET) == "DELETE"


def test_tampered_url_matches_no_method():
    url = Presigner(ReadOnlyCredentials(ACCESS, SECRET, None), "eu-west-1", now=FROZEN).url(
        "GET", "my-bucket", "k"
    )
    tampered = url.replace("/k?", "/other?")
    assert signed_method(parse_presigned_url(tampered), SECRET) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://x/y",
        "https://b.s3.amazonaws.com/k",
        "https://b.s3.amazonaws.com/k?X-Amz-Algorithm=AWS4-HMAC-SHA256",
        "https://b.s3.amazonaws.com/k?AWSAccessKeyId=A&Expires=1&Signature=x",
    ],
)
def test_parse_refuses_non_sigv4(url):
    with pytest.raises(PresignedUrlError):
        parse_presigned_url(url)


# -- bucket names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "My-Bucket",
        "my_bucket",
        "-bucket",
        "bucket-",
        "my..bucket",
        "192.168.5.4",
        "xn--bucket",
        "bucket-s3alias",
        "bucket--ol-s3",
        "my.-bucket",
        "bucket!",
        "",
        "sthree-x",
    ],
)
def test_bucket_names_s3_refuses(name):
    assert bucket_name_problem(name) is not None
    with pytest.raises(UsageError, match="invalid bucket name"):
        validate_bucket_name(name)


@pytest.mark.parametrize("name", ["abc", "my-bucket", "a" * 63, "bucket.1", "1.2.3.4x", "0ab"])
def test_bucket_names_s3_accepts(name):
    assert validate_bucket_name(name, warn_dots=False) == name


def test_dotted_bucket_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="manifestkit"):
        validate_bucket_name("my.bucket")
    assert "path-style" in caplog.text


def test_quote_key_is_urllib_quote():
    """The fast key quoting gives urllib's bytes (what botocore uses) on random Unicode keys."""
    import random
    from urllib.parse import quote

    from manifestkit.s3.presign import quote_key

    rng = random.Random(20261127)
    alphabet = [chr(i) for i in range(0x250)] + ["日", "🙂", "é", "\u2028", "\ufeff"]
    for _ in range(20_000):
        key = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 24)))
        assert quote_key(key) == quote(key, safe="/~"), key


def test_parse_accepts_signature_anywhere_in_query():
    url = Presigner(ReadOnlyCredentials(ACCESS, SECRET, TOKEN), "eu-west-1", now=FROZEN).url(
        "HEAD", "my-bucket", "a b"
    )
    base, query = url.split("?")
    items = query.split("&")
    items.insert(1, items.pop())
    moved = parse_presigned_url(f"{base}?{'&'.join(items)}")
    assert moved.signature == parse_presigned_url(url).signature
    assert signed_method(moved, SECRET) == "HEAD"
    with pytest.raises(PresignedUrlError, match="twice"):
        parse_presigned_url(f"{url}&X-Amz-Date=20261127T000000Z")


def test_from_session_warns_for_refreshable_credentials_expiring_first(caplog):
    from botocore.credentials import RefreshableCredentials

    expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=2)
    session = boto3.Session(region_name="eu-west-1")
    session._session._credentials = RefreshableCredentials(
        ACCESS,
        SECRET,
        TOKEN,
        expiry,
        refresh_using=lambda: pytest.fail("no refresh"),
        method="assume-role",
    )
    with caplog.at_level(logging.WARNING, logger="manifestkit"):
        presigner = Presigner.from_session(session, AwsSettings())
    assert f"expire at {expiry.replace(microsecond=0).isoformat()}" in caplog.text
    assert "X-Amz-Security-Token=" in presigner.url("GET", "my-bucket", "k")
    assert TOKEN not in caplog.text


def test_identical_only_to_regional_virtual_botocore():
    """The exact meaning of "byte-identical to botocore" (module doc of presign): it holds against
    botocore configured for regional virtual-hosted URLs; with only ``signature_version='s3v4'``
    botocore signs us-east-1 URLs for the global host and not one URL matches."""
    ours = Presigner(
        ReadOnlyCredentials(ACCESS, SECRET, None), "us-east-1", expires_in=3600, now=FROZEN
    )
    session = boto3.Session(aws_access_key_id=ACCESS, aws_secret_access_key=SECRET)
    regional = session.client(
        "s3",
        region_name="us-east-1",
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "virtual", "us_east_1_regional_endpoint": "regional"},
        ),
    )
    plain = session.client("s3", region_name="us-east-1", config=Config(signature_version="s3v4"))
    for key in ("a/b.part0", "x y/ü.part12"):
        for method, op in OPS:
            mine = ours.url(method, "my-bucket", key)
            assert mine == botocore_url(regional, op, "my-bucket", key, 3600)
            global_url = botocore_url(plain, op, "my-bucket", key, 3600)
            assert global_url.startswith("https://my-bucket.s3.amazonaws.com/")
            assert mine.startswith("https://my-bucket.s3.us-east-1.amazonaws.com/")
            # not only the host: the signature covers it, so the query differs as well
            assert mine.split("?")[1] != global_url.split("?")[1]
