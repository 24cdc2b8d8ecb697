"""AWS Signature Version 4 checks, done the way S3 and EC2 do them and moto does not.

Two forms are verified against the sandbox's known credentials:

* query-string auth (presigned URLs): ``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature``;
* header auth: ``Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``.

References: "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)" and
"Signature Calculations for the Authorization Header" in the Amazon S3 API Reference, and
"Create a canonical request for Signature Version 4" in the IAM User Guide. The canonical request is
rebuilt from the request as received (raw path and raw query string), so a signing bug on the client
shows up here exactly as it would at AWS.

The payload hash that goes into the canonical request is, as S3 defines it, the value of the
``x-amz-content-sha256`` header (a hex SHA-256, ``UNSIGNED-PAYLOAD`` or one of the
``STREAMING-...`` values used with ``Content-Encoding: aws-chunked``), ``UNSIGNED-PAYLOAD`` for a
presigned S3 URL, or the SHA-256 of the body for services such as EC2 that send no such header. The
signature of the headers is verified; the body's hash and per-chunk signatures are not (moto decodes
aws-chunked bodies itself).

This module deliberately shares no code with ``manifestkit.s3.presign`` (signing key, canonical
query, string to sign): the sandbox is the independent check of that signer, so a bug in the
signer must not be reproduced here and cancel itself out.

Nothing here logs or returns a secret key.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any
from urllib.parse import quote, unquote

from manifestkit.sandbox.clock import iso_time

ALGORITHM = "AWS4-HMAC-SHA256"
#: SigV4 presigned URLs are valid for at most 7 days (S3 API Reference, "Authenticating Requests:
#: Using Query Parameters": "the maximum expiration time is 7 days").
MAX_EXPIRES_SECONDS = 604800
#: how far a request's time may be from S3's clock: 15 minutes (RequestTimeTooSkewed; a presigned
#: URL dated further ahead is "not valid yet")
MAX_SKEW = timedelta(minutes=15)
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_CREDENTIAL_SHAPE = '"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request"'
_QUERY_AUTH_PARAMS = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Signature",
    "X-Amz-Date",
    "X-Amz-SignedHeaders",
    "X-Amz-Expires",
)


@dataclass(frozen=True)
class Credential:
    """One access key the sandbox accepts, and the (moto) account it belongs to."""

    access_key: str
    secret_key: str
    account_id: str = "123456789012"

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"Credential(access_key={self.access_key!r}, account_id={self.account_id!r})"


class Failure(enum.Enum):
    """Why a request was refused; the server turns each into the service's own error."""

    #: both query auth and an Authorization header (S3: 400 InvalidArgument)
    TWO_MECHANISMS = "two-mechanisms"
    #: SigV2 or another scheme (S3 in SigV4-only regions: 400 InvalidRequest)
    UNSUPPORTED = "unsupported"
    #: a missing or malformed auth parameter or header
    MALFORMED = "malformed"
    #: X-Amz-Expires above 604800
    EXPIRES_TOO_LONG = "expires-too-long"
    #: the access key is not one the sandbox knows
    UNKNOWN_KEY = "unknown-key"
    #: presigned URL used after X-Amz-Date + X-Amz-Expires
    EXPIRED = "expired"
    #: presigned URL dated more than MAX_SKEW in the future (S3: 403 "Request is not valid yet")
    NOT_YET_VALID = "not-yet-valid"
    #: header-signed request whose time is more than MAX_SKEW off (S3: 403 RequestTimeTooSkewed)
    SKEWED = "skewed"
    #: the signature does not match (wrong secret, tampered URL, other method...)
    SIGNATURE = "signature"
    #: S3 header auth without x-amz-content-sha256
    MISSING_CONTENT_SHA256 = "missing-content-sha256"


class AuthError(Exception):
    """A request whose authentication fails; ``details`` are extra elements for the error body."""

    def __init__(
        self,
        failure: Failure,
        message: str,
        *,
        query_auth: bool,
        details: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.query_auth = query_auth
        self.details = details


@dataclass(frozen=True)
class ParsedAuth:
    """The SigV4 fields of one request, before verification."""

    query_auth: bool
    access_key: str
    scope_date: str
    region: str
    service: str
    terminal: str
    signed_headers: tuple[str, ...]
    signature: str
    amz_date: datetime
    amz_date_text: str
    #: seconds, query auth only
    expires: int | None

    @property
    def scope(self) -> str:
        return f"{self.scope_date}/{self.region}/{self.service}/{self.terminal}"


@dataclass(frozen=True)
class AuthResult:
    """A verified request: who signed it, for which region and service, valid until when."""

    access_key: str
    account_id: str
    region: str
    service: str
    query_auth: bool
    signed_at: datetime
    #: presigned URLs only
    expires_at: datetime | None


# ---------------------------------------------------------------------------- parsing


def _query_pairs(query_string: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs of a raw query string, in order; ``?acl`` gives ("acl", "")."""
    pairs = []
    for part in query_string.split("&"):
        if part:
            name, _, value = part.partition("=")
            pairs.append((unquote(name), unquote(value)))
    return pairs


def has_query_auth(query_string: str) -> bool:
    return "X-Amz-Algorithm=" in query_string or "X-Amz-Credential=" in query_string


def _is_sigv2(environ: Mapping[str, Any]) -> bool:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    query = environ.get("QUERY_STRING", "")
    return auth.startswith("AWS ") or ("AWSAccessKeyId=" in query and "Signature=" in query)


def _parse_amz_date(text: str, *, query_auth: bool) -> datetime:
    try:
        return datetime.strptime(text, AMZ_DATE_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        raise AuthError(
            Failure.MALFORMED,
            "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"",
            query_auth=query_auth,
        ) from None


def _split_credential(credential: str, *, query_auth: bool) -> tuple[str, str, str, str, str]:
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise AuthError(
            Failure.MALFORMED,
            f"{credential_error_prefix(query_auth)}; the Credential is mal-formed; "
            f"expecting {_CREDENTIAL_SHAPE}.",
            query_auth=query_auth,
        )
    access_key, scope_date, region, service, terminal = parts
    return access_key, scope_date, region, service, terminal


def parse_auth(environ: Mapping[str, Any]) -> ParsedAuth | None:
    """The SigV4 fields of a request, None when it carries no authentication at all.

    Raises AuthError for SigV2, for both mechanisms at once, and for malformed parameters.
    """
    query = environ.get("QUERY_STRING", "")
    header = environ.get("HTTP_AUTHORIZATION")
    query_auth = has_query_auth(query)
    if query_auth and header:
        raise AuthError(
            Failure.TWO_MECHANISMS,
            "Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, Signature "
            "query string parameter or the Authorization header should be specified",
            query_auth=True,
        )
    if _is_sigv2(environ):
        raise AuthError(
            Failure.UNSUPPORTED,
            "The authorization mechanism you have provided is not supported. "
            "Please use AWS4-HMAC-SHA256.",
            query_auth="Signature=" in query,
        )
    if query_auth:
        return _parse_query_auth(query)
    if header:
        return _parse_header_auth(header, environ)
    return None


def _parse_query_auth(query: str) -> ParsedAuth:
    params: dict[str, str] = {}
    for name, value in _query_pairs(query):
        if name.startswith("X-Amz-"):
            params.setdefault(name, value)
    if any(not params.get(name) for name in _QUERY_AUTH_PARAMS):
        raise AuthError(
            Failure.MALFORMED,
            "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
            "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.",
            query_auth=True,
        )
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise AuthError(
            Failure.MALFORMED,
            f'X-Amz-Algorithm only supports "{ALGORITHM}"',
            query_auth=True,
        )
    try:
        expires = int(params["X-Amz-Expires"])
    except ValueError:
        raise AuthError(
            Failure.MALFORMED, "X-Amz-Expires should be a number", query_auth=True
        ) from None
    if expires < 0:
        raise AuthError(Failure.MALFORMED, "X-Amz-Expires must be non-negative", query_auth=True)
    if expires > MAX_EXPIRES_SECONDS:
        raise AuthError(
            Failure.EXPIRES_TOO_LONG,
            "X-Amz-Expires must be less than a week (in seconds) that is; the given X-Amz-Expires "
            f"must be less than {MAX_EXPIRES_SECONDS} seconds",
            query_auth=True,
        )
    amz_date_text = params["X-Amz-Date"]
    return _checked_auth(
        credential=params["X-Amz-Credential"],
        signed_headers=params["X-Amz-SignedHeaders"],
        signature=params["X-Amz-Signature"],
        amz_date=_parse_amz_date(amz_date_text, query_auth=True),
        amz_date_text=amz_date_text,
        expires=expires,
    )


def _parse_header_auth(header: str, environ: Mapping[str, Any]) -> ParsedAuth:
    malformed = "The authorization header is malformed"
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise AuthError(
            Failure.UNSUPPORTED,
            "The authorization mechanism you have provided is not supported. "
            "Please use AWS4-HMAC-SHA256.",
            query_auth=False,
        )
    fields: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields[name] = value
    missing = [
        name for name in ("Credential", "SignedHeaders", "Signature") if not fields.get(name)
    ]
    if missing:
        raise AuthError(
            Failure.MALFORMED,
            f"{malformed}; missing {', '.join(missing)}.",
            query_auth=False,
        )
    amz_date_text = environ.get("HTTP_X_AMZ_DATE", "")
    if amz_date_text:
        amz_date = _parse_amz_date(amz_date_text, query_auth=False)
    else:
        amz_date = _parse_http_date(environ.get("HTTP_DATE", ""))
        amz_date_text = amz_date.strftime(AMZ_DATE_FORMAT)
    return _checked_auth(
        credential=fields["Credential"],
        signed_headers=fields["SignedHeaders"],
        signature=fields["Signature"],
        amz_date=amz_date,
        amz_date_text=amz_date_text,
        expires=None,
    )


def _checked_auth(
    *,
    credential: str,
    signed_headers: str,
    signature: str,
    amz_date: datetime,
    amz_date_text: str,
    expires: int | None,
) -> ParsedAuth:
    """The fields both auth forms share, split and scope-checked; ``expires`` marks query auth."""
    query_auth = expires is not None
    access_key, scope_date, region, service, terminal = _split_credential(
        credential, query_auth=query_auth
    )
    parsed = ParsedAuth(
        query_auth=query_auth,
        access_key=access_key,
        scope_date=scope_date,
        region=region,
        service=service,
        terminal=terminal,
        signed_headers=tuple(signed_headers.split(";")),
        signature=signature,
        amz_date=amz_date,
        amz_date_text=amz_date_text,
        expires=expires,
    )
    _check_scope(parsed)
    return parsed


def _parse_http_date(text: str) -> datetime:
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(text).astimezone(timezone.utc)
    except (TypeError, ValueError, IndexError):
        raise AuthError(
            Failure.MALFORMED,
            "AWS authentication requires a valid Date or x-amz-date header",
            query_auth=False,
        ) from None


def credential_error_prefix(query_auth: bool) -> str:
    """How S3 starts a complaint about the credential scope, by auth form."""
    if query_auth:
        return "Error parsing the X-Amz-Credential parameter"
    return "The authorization header is malformed"


def _check_scope(parsed: ParsedAuth) -> None:
    where = credential_error_prefix(parsed.query_auth)
    if parsed.terminal != "aws4_request":
        raise AuthError(
            Failure.MALFORMED,
            f'{where}; incorrect terminal "{parsed.terminal}". This endpoint uses "aws4_request".',
            query_auth=parsed.query_auth,
        )
    if parsed.scope_date != parsed.amz_date_text[:8]:
        raise AuthError(
            Failure.MALFORMED,
            f'{where}; Invalid credential date "{parsed.scope_date}". This date is not the same '
            f'as X-Amz-Date: "{parsed.amz_date_text[:8]}".',
            query_auth=parsed.query_auth,
        )
    if "host" not in parsed.signed_headers:
        raise AuthError(
            Failure.MALFORMED,
            f"{where}; the host header must be signed (SignedHeaders lacks host).",
            query_auth=parsed.query_auth,
        )


# ---------------------------------------------------------------------------- canonical request


def _raw_path(environ: Mapping[str, Any]) -> str:
    """The request path exactly as sent (werkzeug keeps it in RAW_URI / REQUEST_URI)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw is None:
        return quote(environ.get("PATH_INFO", "/") or "/", safe="/~")
    if raw.startswith(("http://", "https://")):  # absolute-form request target
        raw = "/" + raw.split("://", 1)[1].partition("/")[2]
    return raw.partition("?")[0] or "/"


def canonical_uri(environ: Mapping[str, Any], *, s3: bool) -> str:
    raw = _raw_path(environ)
    if s3:
        # S3 signs the object path once URI-encoded, without normalisation (a key may hold "//").
        return quote(unquote(raw), safe="/~")
    # Other services normalise the path and encode the already-encoded path a second time.
    normalized = posixpath.normpath(raw) if raw not in ("", "/") else "/"
    if raw.endswith("/") and normalized != "/":
        normalized += "/"
    return quote(normalized, safe="/~")


def canonical_query(query_string: str, *, drop_signature: bool) -> str:
    encoded = []
    for name, value in _query_pairs(query_string):
        if drop_signature and name == "X-Amz-Signature":
            continue
        encoded.append((quote(name, safe="-_.~"), quote(value, safe="-_.~")))
    encoded.sort()
    return "&".join(f"{name}={value}" for name, value in encoded)


def _header_value(environ: Mapping[str, Any], name: str) -> str:
    if name == "content-type":
        key = "CONTENT_TYPE"
    elif name == "content-length":
        key = "CONTENT_LENGTH"
    else:
        key = "HTTP_" + name.upper().replace("-", "_")
    return " ".join(str(environ.get(key, "")).split())


def canonical_request(
    environ: Mapping[str, Any], parsed: ParsedAuth, payload_hash: str, *, s3: bool
) -> str:
    headers = "".join(f"{name}:{_header_value(environ, name)}\n" for name in parsed.signed_headers)
    return "\n".join(
        (
            environ.get("REQUEST_METHOD", "GET"),
            canonical_uri(environ, s3=s3),
            canonical_query(environ.get("QUERY_STRING", ""), drop_signature=parsed.query_auth),
            headers,
            ";".join(parsed.signed_headers),
            payload_hash,
        )
    )


def string_to_sign(parsed: ParsedAuth, canonical: str) -> str:
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{parsed.amz_date_text}\n{parsed.scope}\n{digest}"


@lru_cache(maxsize=256)
def _signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret_key}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def sign(secret_key: str, parsed: ParsedAuth, to_sign: str) -> str:
    key = _signing_key(secret_key, parsed.scope_date, parsed.region, parsed.service)
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------- verification


def verify(
    environ: Mapping[str, Any],
    parsed: ParsedAuth,
    credentials: Mapping[str, Credential],
    now: datetime,
    *,
    body_sha256: Callable[[], str],
) -> AuthResult:
    """Check the access key, the expiry (presigned URLs, against ``now``) and the signature.

    ``body_sha256`` is called only when the payload hash must come from the body (header auth
    without ``x-amz-content-sha256``). Raises AuthError; returns who signed the request.
    """
    s3 = parsed.service == "s3"
    credential = credentials.get(parsed.access_key)
    if credential is None:
        raise AuthError(
            Failure.UNKNOWN_KEY,
            "The AWS Access Key Id you provided does not exist in our records.",
            query_auth=parsed.query_auth,
            details=(("AWSAccessKeyId", parsed.access_key),),
        )
    expires_at = None
    if parsed.query_auth:
        if parsed.expires is None:  # parse_auth always sets it; a hand-made ParsedAuth may not
            raise AuthError(Failure.MALFORMED, "X-Amz-Expires is missing", query_auth=True)
        expires_at = parsed.amz_date + timedelta(seconds=parsed.expires)
        if s3 and parsed.amz_date - now > MAX_SKEW:
            raise AuthError(
                Failure.NOT_YET_VALID,
                "Request is not valid yet",
                query_auth=True,
                details=(("X-Amz-Date", parsed.amz_date_text), ("ServerTime", iso_time(now))),
            )
        if now > expires_at:
            raise AuthError(
                Failure.EXPIRED,
                "Request has expired",
                query_auth=True,
                details=(
                    ("X-Amz-Expires", str(parsed.expires)),
                    ("Expires", iso_time(expires_at)),
                    ("ServerTime", iso_time(now)),
                ),
            )
        # A presigned S3 URL signs no payload (S3 API Reference, query-parameter auth); botocore
        # signs the body of other services' presigned requests.
        payload_hash = UNSIGNED_PAYLOAD if s3 else body_sha256()
    else:
        if s3 and abs(parsed.amz_date - now) > MAX_SKEW:
            raise AuthError(
                Failure.SKEWED,
                "The difference between the request time and the current time is too large.",
                query_auth=False,
                details=(
                    ("RequestTime", parsed.amz_date_text),
                    ("ServerTime", iso_time(now)),
                    ("MaxAllowedSkewMilliseconds", str(int(MAX_SKEW.total_seconds() * 1000))),
                ),
            )
        payload_hash = environ.get("HTTP_X_AMZ_CONTENT_SHA256", "")
        if not payload_hash:
            if s3:
                raise AuthError(
                    Failure.MISSING_CONTENT_SHA256,
                    "Missing required header for this request: x-amz-content-sha256",
                    query_auth=False,
                )
            payload_hash = body_sha256()
    canonical = canonical_request(environ, parsed, payload_hash, s3=s3)
    to_sign = string_to_sign(parsed, canonical)
    expected = sign(credential.secret_key, parsed, to_sign)
    if not hmac.compare_digest(expected, parsed.signature):
        raise AuthError(
            Failure.SIGNATURE,
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method.",
            query_auth=parsed.query_auth,
            details=(
                ("AWSAccessKeyId", parsed.access_key),
                ("StringToSign", to_sign),
                ("SignatureProvided", parsed.signature),
                ("CanonicalRequest", canonical),
            ),
        )
    return AuthResult(
        access_key=credential.access_key,
        account_id=credential.account_id,
        region=parsed.region,
        service=parsed.service,
        query_auth=parsed.query_auth,
        signed_at=parsed.amz_date,
        expires_at=expires_at,
    )
