"""An S3 server on 127.0.0.1 for the upload tests: the project's signature-checking sandbox when
it is available, moto's threaded server otherwise (then the signature tests are skipped)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import boto3
import pytest
from botocore.config import Config

from manifestkit.aws import AwsSettings

_names = itertools.count()


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    region: str
    access_key: str
    secret_key: str
    #: True when the server checks SigV4 signatures, expiry and methods (the sandbox)
    checks_signatures: bool
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
                [os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
                 env.get("PYTHONPATH", "")]
            ),
        )
        return env


@pytest.fixture(scope="session")
def s3server() -> Iterator[S3Server]:
    try:
        from manifestkit.sandbox import Sandbox  # type: ignore[attr-defined]
    except ImportError:
        Sandbox = None  # noqa: N806
    if Sandbox is not None:
        with Sandbox(region="us-east-1") as sandbox:
            yield S3Server(
                sandbox.s3_endpoint_url, sandbox.region, sandbox.access_key, sandbox.secret_key,
                checks_signatures=True, sandbox=sandbox,
            )
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(f"http://{host}:{port}", "us-east-1", "testing", "testing",
                       checks_signatures=False)
    finally:
        server.stop()


@pytest.fixture
def bucket(s3server: S3Server) -> str:
    name = f"mk-upload-{os.getpid()}-{next(_names)}"
    s3server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def needs_signature_checks(s3server: S3Server) -> None:
    if not s3server.checks_signatures:
        pytest.skip("the S3 server does not check signatures (sandbox not available)")
