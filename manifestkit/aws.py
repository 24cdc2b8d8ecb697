"""boto3 sessions and clients built from one settings object; credentials from boto3's own chain.

Flags may override the chain (profile, region, endpoints, keys), but nothing here reads the
environment itself: ``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_EC2`` and the
config files are honoured because boto3 honours them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials

from manifestkit.errors import CredentialsError, UsageError


@dataclass(frozen=True)
class AwsSettings:
    profile: str | None = None
    region: str | None = None
    s3_endpoint_url: str | None = None
    ec2_endpoint_url: str | None = None
    access_key: str | None = None
    #: never printed or logged
    secret_key: str | None = None
    session_token: str | None = None
    #: botocore retry mode and attempts for every client
    retry_mode: str = "standard"
    max_attempts: int = 8
    #: S3 addressing: "auto" lets botocore choose (virtual-hosted on AWS, path on custom endpoints)
    addressing_style: str = "auto"

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return (
            f"AwsSettings(profile={self.profile!r}, region={self.region!r}, "
            f"s3_endpoint_url={self.s3_endpoint_url!r}, "
            f"ec2_endpoint_url={self.ec2_endpoint_url!r}, "
            f"access_key={'***' if self.access_key else None})"
        )


def make_session(settings: AwsSettings) -> boto3.Session:
    if bool(settings.access_key) != bool(settings.secret_key):
        # boto3 takes half a pair and fails later, inside the signer, with a TypeError
        raise UsageError(
            "an access key and a secret key go together; only one was given",
            fix="pass both --aws-access-key and --aws-secret-key, or neither",
        )
    try:
        return boto3.Session(
            profile_name=settings.profile,
            region_name=settings.region,
            aws_access_key_id=settings.access_key,
            aws_secret_access_key=settings.secret_key,
            aws_session_token=settings.session_token,
        )
    except botocore.exceptions.ProfileNotFound as exc:
        raise UsageError(str(exc), fix="check --profile / AWS_PROFILE and ~/.aws/config") from exc


def region_of(session: boto3.Session) -> str:
    region = session.region_name
    if not region:
        raise UsageError(
            "no AWS region configured",
            # boto3 reads AWS_DEFAULT_REGION and the profile's region, never AWS_REGION
            fix="pass --region, set AWS_DEFAULT_REGION (boto3 does not read AWS_REGION), or "
            "put region = ... in the profile",
        )
    return region


def client_config(settings: AwsSettings, *, max_pool_connections: int = 10, **s3: Any) -> Config:
    return Config(
        signature_version="s3v4",
        retries={"mode": settings.retry_mode, "max_attempts": settings.max_attempts},
        max_pool_connections=max_pool_connections,
        s3={"addressing_style": settings.addressing_style, **s3},
    )


def s3_client(session: boto3.Session, settings: AwsSettings, *, max_pool_connections: int = 10):
    return session.client(
        "s3",
        region_name=region_of(session),
        endpoint_url=settings.s3_endpoint_url,
        config=client_config(settings, max_pool_connections=max_pool_connections),
    )


def ec2_client(session: boto3.Session, settings: AwsSettings):
    return session.client(
        "ec2",
        region_name=region_of(session),
        endpoint_url=settings.ec2_endpoint_url,
        config=client_config(settings),
    )


def frozen_credentials(session: boto3.Session) -> ReadOnlyCredentials:
    """The session's credentials, resolved once; a clear error when there are none."""
    creds = session.get_credentials()
    if creds is None:
        raise CredentialsError(
            "no AWS credentials found",
            fix="configure them (aws configure, AWS_PROFILE, or "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
        )
    return creds.get_frozen_credentials()
