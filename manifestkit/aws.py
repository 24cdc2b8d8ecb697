"""boto3 sessions and clients built from one settings object; credentials from boto3's own chain.

Flags may override the chain (profile, region, endpoints, keys), but nothing here reads the
environment itself: ``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL_EC2`` and the
config files are honoured because boto3 honours them. An ``isolated`` settings object (the
offline sandbox's) reads none of them: the user's profile, config files and configured endpoints
have nothing to say about a throwaway local server.

boto3 is imported by the first session, not with this module: ``AwsSettings`` is cheap to import
for commands that may never call AWS.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from manifestkit.errors import CredentialsError, UsageError

if TYPE_CHECKING:
    import boto3
    from botocore.config import Config
    from botocore.credentials import ReadOnlyCredentials


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
    #: read nothing of the user's AWS configuration (AWS_PROFILE, config and credentials files,
    #: configured endpoints): for the offline sandbox, whose settings are all given here
    isolated: bool = False

    def __repr__(self) -> str:  # keep secrets out of logs and tracebacks
        return (
            f"AwsSettings(profile={self.profile!r}, region={self.region!r}, "
            f"s3_endpoint_url={self.s3_endpoint_url!r}, "
            f"ec2_endpoint_url={self.ec2_endpoint_url!r}, "
            f"access_key={'***' if self.access_key else None})"
        )


def make_session(settings: AwsSettings) -> boto3.Session:
    import boto3
    import botocore.exceptions

    if bool(settings.access_key) != bool(settings.secret_key):
        # boto3 takes half a pair and fails later, inside the signer, with a TypeError
        raise UsageError(
            "an access key and a secret key go together; only one was given",
            fix="pass both --aws-access-key and --aws-secret-key, or neither",
        )
    if settings.isolated:
        return _isolated_session(settings)
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


def _isolated_session(settings: AwsSettings) -> boto3.Session:
    """A session that reads no profile, config file or configured endpoint of the user's."""
    import boto3
    import botocore.session

    if settings.profile:
        raise UsageError(
            "a profile cannot be used with these settings: they carry their own credentials",
            fix="leave out --profile",
        )
    core = botocore.session.Session()
    # the config store's overrides win over the environment (AWS_PROFILE, AWS_CONFIG_FILE...)
    # and the files, even when the value is None (the session's own variables do not)
    store = core.get_component("config_store")
    store.set_config_variable("profile", None)
    store.set_config_variable("config_file", os.devnull)
    store.set_config_variable("credentials_file", os.devnull)
    store.set_config_variable("ignore_configured_endpoint_urls", True)
    return boto3.Session(
        botocore_session=core,
        region_name=settings.region,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        aws_session_token=settings.session_token,
    )


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
    from botocore.config import Config

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
