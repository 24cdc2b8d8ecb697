"""``manifestkit sandbox`` in a subprocess: prints exports, boto3 works with them, signals stop
it (exit 0)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]


def start(*extra: str) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "manifestkit", "sandbox", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def read_exports(process: subprocess.Popen[str]) -> dict[str, str]:
    assert process.stdout is not None
    exports: dict[str, str] = {}
    for line in process.stdout:
        if line.startswith("export "):
            name, _, value = line[len("export ") :].strip().partition("=")
            exports[name] = value
            if name == "AWS_EC2_METADATA_DISABLED":  # the last line
                break
    return exports


def stop(process: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    process.send_signal(sig)
    try:
        _, stderr = process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    return process.returncode, stderr


def s3_from(exports: dict[str, str]) -> Any:
    session = boto3.Session(
        aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=exports["AWS_SECRET_ACCESS_KEY"],
        region_name=exports["AWS_DEFAULT_REGION"],
    )
    return session.client(
        "s3", endpoint_url=exports["AWS_ENDPOINT_URL_S3"], config=Config(signature_version="s3v4")
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_command_prints_exports_and_stops_cleanly(sig: int) -> None:
    process = start()
    try:
        exports = read_exports(process)
        assert exports["AWS_ENDPOINT_URL_S3"].startswith("http://127.0.0.1:")
        assert exports["AWS_EC2_METADATA_DISABLED"] == "true"
        s3 = s3_from(exports)
        s3.create_bucket(Bucket="from-the-cli")
        s3.put_object(Bucket="from-the-cli", Key="k", Body=b"data")
        assert s3.get_object(Bucket="from-the-cli", Key="k")["Body"].read() == b"data"
    finally:
        code, stderr = stop(process, sig)
    assert code == 0, stderr
    assert "Traceback" not in stderr


def test_env_vars_alone_point_boto3_at_it(tmp_path: Path) -> None:
    process = start("--output", "json", "--region", "eu-west-1")
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("}"):
                break
        document = json.loads("".join(lines))
        env = {**os.environ, **document["env"]}
        # a child that knows nothing but the environment, as a user's shell would
        script = (
            "import boto3; s3 = boto3.client('s3'); "
            "s3.create_bucket(Bucket='env-only', "
            "CreateBucketConfiguration={'LocationConstraint': 'eu-west-1'}); "
            "print(s3.get_bucket_location(Bucket='env-only')['LocationConstraint'])"
        )
        child = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout.strip() == "eu-west-1"
        assert document["region"] == "eu-west-1"
        assert set(document["unset"]) >= {"AWS_PROFILE", "AWS_SESSION_TOKEN"}
    finally:
        code, stderr = stop(process, signal.SIGINT)
    assert code == 0, stderr


def test_bad_port_is_a_usage_error() -> None:
    process = start("--port", "70000")
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 2
    assert stderr.startswith("manifestkit: error:")
