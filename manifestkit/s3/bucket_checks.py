"""Before uploading: the bucket exists, belongs to whom the user says, and lives in the EC2 region.

The importer reads the parts from inside the region it runs in; a bucket elsewhere means a
cross-region transfer at best and an import that fails at worst, so a region mismatch is an error
(``--ignore-region-affinity`` overrides it). Bucket names are checked by
``manifestkit.s3.bucket_names``.
"""

from __future__ import annotations

import logging
from typing import Any

import botocore.exceptions

from manifestkit.errors import CredentialsError, UsageError
from manifestkit.s3.errors import CREDENTIAL_CODES, error_code, translate

log = logging.getLogger("manifestkit")


def owner_args(expected_owner: str | None) -> dict[str, str]:
    """``ExpectedBucketOwner`` for every call that takes it, when the user gave one."""
    return {"ExpectedBucketOwner": expected_owner} if expected_owner else {}


def _normalise_location(constraint: str | None) -> str:
    # GetBucketLocation answers null for us-east-1 and the legacy "EU" for eu-west-1
    # (https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html).
    if not constraint:
        return "us-east-1"
    if constraint == "EU":
        return "eu-west-1"
    return constraint


def _explain_forbidden(s3: Any, bucket: str, expected_owner: str | None) -> None:
    """A HEAD answer has no body, so a 403 does not say why; a GET does (wrong key, bad
    signature...). Raise that error when it is about the credentials."""
    try:
        s3.list_objects_v2(Bucket=bucket, MaxKeys=1, **owner_args(expected_owner))
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) in CREDENTIAL_CODES:
            raise translate(exc, bucket=bucket, action="check") from exc
    except botocore.exceptions.BotoCoreError:
        pass


def bucket_region(s3: Any, bucket: str, *, expected_owner: str | None = None) -> str | None:
    """The bucket's region, or None when the bucket does not exist.

    HeadBucket answers with ``x-amz-bucket-region`` even on the 301 a wrong-region endpoint gives;
    GetBucketLocation is the fallback for servers that leave the header out.
    """
    try:
        response = s3.head_bucket(Bucket=bucket, **owner_args(expected_owner))
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if code in ("404", "NoSuchBucket", "NotFound"):
            return None
        if code in ("301", "PermanentRedirect", "400") and headers.get("x-amz-bucket-region"):
            return headers["x-amz-bucket-region"]
        if code in ("403", "AccessDenied"):
            _explain_forbidden(s3, bucket, expected_owner)
            raise CredentialsError(
                f"access to bucket {bucket!r} denied"
                + (f" (or it is not owned by account {expected_owner})" if expected_owner else ""),
                fix="check the bucket name, --bucket-owner, and that these credentials may use it",
            ) from exc
        raise translate(exc, bucket=bucket, action="check") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, bucket=bucket, action="check") from exc
    region = headers.get("x-amz-bucket-region")
    if region:
        return region
    try:
        location = s3.get_bucket_location(Bucket=bucket, **owner_args(expected_owner))
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise translate(exc, bucket=bucket, action="find the region of") from exc
    return _normalise_location(location.get("LocationConstraint"))


def create_bucket(s3: Any, bucket: str, region: str) -> None:
    # us-east-1 is the one region that refuses an explicit LocationConstraint
    # (https://docs.aws.amazon.com/AmazonS3/latest/API/API_CreateBucket.html).
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except botocore.exceptions.ClientError as exc:
        if error_code(exc) != "BucketAlreadyOwnedByYou":
            raise translate(exc, bucket=bucket, action="create") from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise translate(exc, bucket=bucket, action="create") from exc
    log.info("created bucket %s in %s", bucket, region)


def ensure_bucket(
    s3: Any,
    bucket: str,
    *,
    ec2_region: str,
    create: bool = False,
    ignore_region_affinity: bool = False,
    expected_owner: str | None = None,
) -> str:
    """Check (or create) ``bucket``; return its region. ``UsageError`` (exit 2) says the fix."""
    region = bucket_region(s3, bucket, expected_owner=expected_owner)
    if region is None:
        if not create:
            raise UsageError(
                f"bucket {bucket!r} does not exist",
                fix=f"create it in {ec2_region} or pass --create-bucket",
            )
        create_bucket(s3, bucket, ec2_region)
        return ec2_region
    if region != ec2_region:
        if not ignore_region_affinity:
            raise UsageError(
                f"bucket {bucket!r} is in {region} but the import runs in {ec2_region}",
                fix=f"use a bucket in {ec2_region}, pass --region {region}, "
                "or --ignore-region-affinity",
            )
        log.warning(
            "bucket %s is in %s, the import runs in %s (--ignore-region-affinity)",
            bucket,
            region,
            ec2_region,
        )
    return region
