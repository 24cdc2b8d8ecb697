"""More of the import command: DryRun refused, --convert on the way in, Ctrl-C while waiting."""

from __future__ import annotations

import http.server
import json
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from .helpers import WAIT, ZONE, endpoint_flags, objects, run

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


class _Refusing(http.server.BaseHTTPRequestHandler):
    """An EC2 endpoint on loopback that answers every call with one error, and records them;
    with ``dry_run_ok``, a DryRun is answered DryRunOperation (allowed) and only the real call
    gets the error."""

    code = "UnauthorizedOperation"
    status = 403
    dry_run_ok = False
    seen: list[dict[str, list[str]]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        params = parse_qs(body.decode())
        type(self).seen.append(params)
        code, status = self.code, self.status
        if self.dry_run_ok and params.get("DryRun") == ["true"]:
            code, status = "DryRunOperation", 412
        answer = (
            f"<Response><Errors><Error><Code>{code}</Code><Message>You cannot do that now."
            f"</Message></Error></Errors><RequestID>r</RequestID></Response>"
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_ec2() -> Iterator[str]:
    _Refusing.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()


def test_dry_run_not_allowed_is_exit_1_and_uploads_nothing(
    refusing_ec2: str, sandbox: Any, bucket: str, s3: Any, tmp_path: Path, capsys: Any
) -> None:
    shutil.copyfile(SAMPLES / "tiny.raw", tmp_path / "tiny.raw")
    code, out, err = run(
        capsys,
        [
            "import-instance",
            str(tmp_path / "tiny.raw"),
            "-p",
            "Windows",
            "-t",
            "m5.large",
            "-b",
            bucket,
            "--dry-run",
            *endpoint_flags(sandbox, refusing_ec2),
        ],
    )
    assert code == 1, err
    assert "would NOT be allowed (UnauthorizedOperation)" in out
    (sent,) = _Refusing.seen
    assert sent["Action"] == ["ImportInstance"] and sent["DryRun"] == ["true"]
    assert sent["LaunchSpecification.InstanceType"] == ["m5.large"]
    assert sent["DiskImage.1.Image.Bytes"] == [str((tmp_path / "tiny.raw").stat().st_size)]
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_auth_failure_is_caught_by_the_dry_run_before_the_upload(
    refusing_ec2: str,
    sandbox: Any,
    bucket: str,
    s3: Any,
    tmp_path: Path,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Refusing, "code", "AuthFailure")
    monkeypatch.setattr(_Refusing, "status", 401)
    shutil.copyfile(SAMPLES / "tiny.raw", tmp_path / "tiny.raw")
    code, out, err = run(
        capsys,
        [
            "import-volume",
            str(tmp_path / "tiny.raw"),
            "-z",
            ZONE,
            "-b",
            bucket,
            *endpoint_flags(sandbox, refusing_ec2),
        ],
    )
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("manifestkit: error: ImportVolume: EC2 refused the credentials")
    assert "nothing was uploaded" in line and out == ""
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    assert [p["DryRun"] for p in _Refusing.seen] == [["true"]]


def test_a_failed_call_after_the_upload_says_the_way_out_and_it_works(
    refusing_ec2: str,
    sandbox: Any,
    bucket: str,
    s3: Any,
    tmp_path: Path,
    capsys: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_Refusing, "dry_run_ok", True)
    monkeypatch.setattr(_Refusing, "code", "ResourceLimitExceeded")
    monkeypatch.setattr(_Refusing, "status", 400)
    shutil.copyfile(SAMPLES / "tiny.raw", tmp_path / "tiny.raw")
    code, out, err = run(
        capsys,
        [
            "import-instance",
            str(tmp_path / "tiny.raw"),
            "-p",
            "Windows",
            "-b",
            bucket,
            *endpoint_flags(sandbox, refusing_ec2),
        ],
    )
    assert code == 1
    (line,) = err.strip().splitlines()
    assert "you already have 5 active conversion tasks" in line
    keys = objects(s3, bucket)
    manifest_key = next(k for k in keys if k.endswith("manifest.xml"))
    assert f"s3://{bucket}/{manifest_key}" in line
    assert "manifestkit import-instance --manifest-url URL" in line
    assert "manifestkit delete URL" in line
    # the URL is a bearer token: on stdout as the upload's result, never in the error line
    url = out.strip()
    assert url.startswith(sandbox.s3_endpoint_url) and "X-Amz-Signature=" in url
    assert "X-Amz-Signature" not in err
    # the way out works: retry against a willing EC2, then clean up
    code, out, err = run(
        capsys,
        [
            "import-instance",
            "--manifest-url",
            url,
            "-p",
            "Windows",
            *WAIT,
            *endpoint_flags(sandbox),
        ],
    )
    assert code == 0 and "completed" in out.splitlines()[0], err
    code, _, err = run(capsys, ["delete", url, *endpoint_flags(sandbox)])
    assert code == 0, err
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_import_with_convert(
    sandbox: Any, bucket: str, ec2: Any, tmp_path: Path, capsys: Any
) -> None:
    sparse = tmp_path / "sparse.vmdk"  # monolithicSparse: EC2 refuses it as it is
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(SAMPLES / "tiny.raw"), str(sparse)],
        check=True,
        capture_output=True,
    )
    flags = endpoint_flags(sandbox)
    code, _, err = run(capsys, ["import-volume", str(sparse), "-z", ZONE, "-b", bucket, *flags])
    assert code == 2 and "--convert" in err
    code, out, err = run(
        capsys,
        [
            "import-volume",
            str(sparse),
            "-z",
            ZONE,
            "-b",
            bucket,
            "--convert",
            *WAIT,
            "--output",
            "json",
            *flags,
        ],
    )
    assert code == 0, err
    task = json.loads(out)["task"]
    assert task["state"] == "completed" and task["image_format"] == "VMDK"
    assert ec2.describe_volumes(VolumeIds=task["volume_ids"])["Volumes"]


def test_ctrl_c_while_waiting_names_the_task_that_goes_on(
    sandbox: Any,
    bucket: str,
    ec2: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clean_env: Any,
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_DELAY", "0.5")
    shutil.copyfile(SAMPLES / "tiny.raw", tmp_path / "tiny.raw")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "manifestkit",
            "import-volume",
            "tiny.raw",
            "-z",
            ZONE,
            "-b",
            bucket,
            "--part-size",
            "4K",
            *WAIT,
        ],
        cwd=tmp_path,
        env=clean_env(**sandbox.env()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert process.stderr is not None
    try:
        first = process.stderr.readline()  # "hh:mm:ss import-vol-... active: ..."
        task_id = first.split()[1]
        assert task_id.startswith("import-vol-"), first
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert f"conversion task {task_id} goes on in EC2" in err
    assert f"manifestkit tasks {task_id} --watch" in err and f"manifestkit cancel {task_id}" in err
    ec2.cancel_conversion_task(ConversionTaskId=task_id)
