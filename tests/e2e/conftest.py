"""End-to-end fixtures: images of every importable format, and a per-test working copy.

The ``sandbox`` / ``s3`` / ``bucket`` fixtures come from tests/conftest.py (the shared sandbox:
moto S3 behind the signature check + the EC2 import endpoint, on 127.0.0.1). Until they land, a
stand-in with the same surface is defined here.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


@pytest.fixture(autouse=True)
def quick_importer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The importer gives up on a missing part after 2 s instead of at task expiry (days)."""
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_POLL_INTERVAL", "0.05")
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "2")
    monkeypatch.delenv("MANIFESTKIT_SANDBOX_PART_DELAY", raising=False)


def _qemu(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small image per importable kind: the samples, plus a fixed VHD made with qemu-img."""
    folder = tmp_path_factory.mktemp("images")
    found = {
        "vmdk-stream": SAMPLES / "tiny-stream.vmdk",
        "vhd-dynamic": SAMPLES / "tiny-dynamic.vhd",
        "raw": SAMPLES / "tiny.raw",
    }
    fixed = folder / "tiny-fixed.vhd"
    _qemu("convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size=on",
          str(SAMPLES / "tiny.raw"), str(fixed))
    found["vhd-fixed"] = fixed
    return found


@pytest.fixture
def workdir(tmp_path: Path, images: dict[str, Path]) -> Path:
    """A copy of every image in a fresh directory (upload state files are written beside them)."""
    for path in images.values():
        shutil.copyfile(path, tmp_path / path.name)
    return tmp_path


def fresh_bucket(s3: Any) -> str:
    name = f"e2e-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


# ---- stand-in for the shared sandbox fixtures (removed once tests/conftest.py has them) ------

try:
    from manifestkit.sandbox import Sandbox as _SharedSandbox  # noqa: F401

    _HAVE_SHARED = True
except ImportError:
    _HAVE_SHARED = False

if not _HAVE_SHARED:
    import datetime as dt
    import threading
    from dataclasses import dataclass, field

    import boto3
    from botocore.config import Config

    from manifestkit.aws import AwsSettings

    @dataclass
    class _Clock:
        offset: dt.timedelta = dt.timedelta()
        lock: threading.Lock = field(default_factory=threading.Lock)

        def now(self) -> dt.datetime:
            with self.lock:
                return dt.datetime.now(dt.timezone.utc) + self.offset

        def advance(self, seconds: float) -> None:
            with self.lock:
                self.offset += dt.timedelta(seconds=seconds)

    @dataclass(frozen=True, eq=False)
    class _Context:
        clock: _Clock
        region: str = "us-east-1"
        account_id: str = "123456789012"

    @dataclass
    class _StandIn:
        url: str
        clock: _Clock
        region: str = "us-east-1"
        access_key: str = "testing"
        secret_key: str = "testing"

        @property
        def s3_endpoint_url(self) -> str:
            return self.url

        @property
        def ec2_endpoint_url(self) -> str:
            return self.url

        def aws_settings(self) -> AwsSettings:
            return AwsSettings(
                region=self.region, s3_endpoint_url=self.url, ec2_endpoint_url=self.url,
                access_key=self.access_key, secret_key=self.secret_key,
            )

        def env(self) -> dict[str, str]:
            return {
                "AWS_ENDPOINT_URL_S3": self.url, "AWS_ENDPOINT_URL_EC2": self.url,
                "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region,
            }

    @pytest.fixture(scope="session")
    def sandbox() -> Iterator[_StandIn]:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        from manifestkit.sandbox import importer

        moto_app = DomainDispatcherApplication(create_backend_app)
        clock = _Clock()
        context = _Context(clock=clock)

        def app(environ: dict, start_response: Any) -> Any:
            if "/ec2/aws4_request" in environ.get("HTTP_AUTHORIZATION", ""):
                answer = importer.handle(environ, context)
                if answer is not None:
                    status, headers, body = answer
                    start_response(status, headers)
                    return [body]
            return moto_app(environ, start_response)

        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield _StandIn(f"http://127.0.0.1:{server.server_port}", clock)
        finally:
            server.shutdown()
            thread.join()

    @pytest.fixture(scope="session")
    def s3(sandbox: _StandIn) -> Any:
        return boto3.client("s3", region_name="us-east-1", endpoint_url=sandbox.url,
                            config=Config(signature_version="s3v4"))

    @pytest.fixture
    def bucket(s3: Any) -> str:
        return fresh_bucket(s3)
