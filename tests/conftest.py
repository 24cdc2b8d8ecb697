"""Test-wide setup, before boto3 is imported: throwaway credentials, no instance-metadata probing.

Sandbox fixtures (manifestkit.sandbox: moto S3 + EC2 behind SigV4 checks, over real HTTP on
127.0.0.1):

* ``sandbox`` (session): a running ``manifestkit.sandbox.Sandbox``; ``.endpoint_url`` (= its
  ``s3_endpoint_url`` and ``ec2_endpoint_url``), ``.region`` (us-east-1), ``.access_key`` /
  ``.secret_key`` (testing/testing), ``.clock``, ``.aws_settings()``, ``.env()``, ``.context``.
  Shared by the whole session: name buckets uniquely (``bucket`` does) and leave the clock as
  you found it (``sandbox_clock`` does).
* ``s3`` (function): a boto3 S3 client for it (SigV4, path style, the sandbox's credentials).
* ``ec2`` (function): a boto3 EC2 client for it.
* ``bucket`` (function): the name of a fresh, empty bucket in the sandbox's region.
* ``sandbox_clock`` (function): the sandbox's ``SandboxClock``, reset to the real time after the
  test — use it to make presigned URLs expire (``sandbox_clock.advance(3600)``).
* ``sandbox_env`` (function): ``os.environ`` pointed at the sandbox (``sandbox.env()``) for the
  test, for code that builds its clients from the environment; returns the variables.
* ``no_aws_credentials`` (function): no credentials in any place botocore looks, for the
  "no AWS credentials found" paths.

Do not use moto's ``mock_aws`` in tests that share the session ``sandbox``: it resets moto's
process-wide backends (everything in the sandbox) and intercepts boto3's requests.
"""

import os
import signal

# A test run started in the background (`cmd &` without job control, nohup) inherits SIGINT
# ignored, and so would every command the tests start: the Ctrl-C tests would see their SIGINT
# ignored and the command run to its end. Ctrl-C is what they test, so it is restored here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
for _name in (
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_EC2",
):
    os.environ.pop(_name, None)
# keep the user's real ~/.aws files out of the tests
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull


# ---------------------------------------------------------------------- sandbox fixtures

import uuid  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Any]:
    from manifestkit.sandbox import Sandbox

    with Sandbox("us-east-1") as running:
        yield running


def _sandbox_client(sandbox: Any, service: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        region_name=sandbox.region,
        endpoint_url=sandbox.endpoint_url,
        aws_access_key_id=sandbox.access_key,
        aws_secret_access_key=sandbox.secret_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"})
        if service == "s3"
        else None,
    )


@pytest.fixture
def s3(sandbox: Any) -> Any:
    return _sandbox_client(sandbox, "s3")


@pytest.fixture
def ec2(sandbox: Any) -> Any:
    return _sandbox_client(sandbox, "ec2")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:20]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def sandbox_clock(sandbox: Any) -> Iterator[Any]:
    sandbox.clock.reset()
    yield sandbox.clock
    sandbox.clock.reset()


@pytest.fixture
def sandbox_env(sandbox: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = sandbox.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials anywhere botocore looks (environment, container, web identity, IMDS)."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
