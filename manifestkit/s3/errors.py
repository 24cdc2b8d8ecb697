"""botocore's S3 exceptions as ``ManifestkitError`` leaves whose messages say how to fix them.

Which errors are worth retrying a whole part for is decided here too: botocore's retry modes have
already retried throttling, 5xx and dropped connections ``max_attempts`` times by the time an
exception reaches us, so a part-level retry only covers what survives that (a long outage, a
corrupted body caught by Content-MD5 / ETag checks).
"""

from __future__ import annotations

import botocore.exceptions

from manifestkit.errors import CredentialsError, ManifestkitError, RemoteError, UsageError

#: the access key or signature is wrong: a configuration problem, retrying cannot help
CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
    }
)
MISSING_BUCKET_CODES = frozenset({"NoSuchBucket"})
#: worth another try of the whole part after botocore's own retries gave up
TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "BadDigest",
        "500",
        "502",
        "503",
        "504",
        "RequestTimeTooSkewed",
        "XAmzContentSHA256Mismatch",
        "IncompleteBody",
    }
)


def error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


def is_transient(exc: BaseException) -> bool:
    """True for failures a later attempt may not see: 5xx, throttling, dropped connections."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return error_code(exc) in TRANSIENT_CODES
    return isinstance(
        exc,
        (
            botocore.exceptions.ConnectionError,  # EndpointConnectionError, ConnectionClosedError
            botocore.exceptions.HTTPClientError,  # ReadTimeout, ProxyConnectionError...
            botocore.exceptions.IncompleteReadError,
            botocore.exceptions.ResponseStreamingError,
            ConnectionError,
            TimeoutError,
        ),
    )


def translate(
    exc: BaseException, *, bucket: str, key: str | None = None, action: str
) -> ManifestkitError:
    """One ``ManifestkitError`` for a botocore failure during ``action`` on ``bucket``/``key``."""
    where = f"s3://{bucket}/{key}" if key else f"bucket {bucket!r}"
    if isinstance(exc, ManifestkitError):
        return exc
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return CredentialsError(
            "no AWS credentials found",
            fix="configure them (aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY)",
        )
    if isinstance(exc, botocore.exceptions.ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "") or code
        if code in CREDENTIAL_CODES:
            return CredentialsError(
                f"S3 refused the credentials while trying to {action} {where}: {code} ({message})",
                fix="check the access key and secret key (AWS_PROFILE, --profile, "
                "~/.aws/credentials)",
            )
        if code in MISSING_BUCKET_CODES:
            return UsageError(
                f"bucket {bucket!r} does not exist",
                fix="create it, pass --create-bucket, or check --bucket and --region",
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            return CredentialsError(
                f"access denied while trying to {action} {where}",
                fix="grant these credentials s3:PutObject, s3:GetObject, s3:DeleteObject and "
                "s3:ListBucket on the bucket, or check --bucket-owner",
            )
        return RemoteError(f"S3 error while trying to {action} {where}: {code} ({message})")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return RemoteError(
            f"cannot reach S3 to {action} {where}: {exc}",
            fix="check the network, --region and --s3-endpoint-url",
        )
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return RemoteError(f"S3 request failed while trying to {action} {where}: {exc}")
    return RemoteError(f"{action} {where} failed: {type(exc).__name__}: {exc}")
