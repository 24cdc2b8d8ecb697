"""The upload tests' view of the session sandbox (S3 with real SigV4/expiry/method checks on
127.0.0.1): endpoint, credentials, settings, clients, CLI arguments and a subprocess environment.
Buckets come from the shared ``bucket`` fixture."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
from botocore.config import Config

from manifestkit.aws import AwsSettings


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    region: str
    access_key: str
    secret_key: str
    sandbox: Any = None

    def settings(self, **overrides: Any) -> AwsSettings:
        base = AwsSettings(
            region=self.region,
            s3_endpoint_url=self.endpoint_url,
            access_key=self.access_key,
            secret_key=self.secret_key,
            max_attempts=4,
        )
        return replace(base, **overrides)

    def client(self, endpoint_url: str | None = None, region: str | None = None) -> Any:
        return boto3.client(
            "s3",
            region_name=region or self.region,
            endpoint_url=endpoint_url or self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def ec2_client(self) -> Any:
        return boto3.client(
            "ec2",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
        )

    def cli_args(self, endpoint_url: str | None = None) -> list[str]:
        return ["--region", self.region, "--s3-endpoint-url", endpoint_url or self.endpoint_url]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=self.access_key,
            AWS_SECRET_ACCESS_KEY=self.secret_key,
            AWS_DEFAULT_REGION=self.region,
            AWS_EC2_METADATA_DISABLED="true",
            PYTHONPATH=os.pathsep.join(
                [
                    os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                    env.get("PYTHONPATH", ""),
                ]
            ),
        )
        return env


@pytest.fixture(scope="session")
def s3server(sandbox: Any) -> S3Server:
    """The session's signature-checking sandbox (tests/conftest.py), seen as an S3 endpoint."""
    return S3Server(
        sandbox.s3_endpoint_url,
        sandbox.region,
        sandbox.access_key,
        sandbox.secret_key,
        sandbox=sandbox,
    )
