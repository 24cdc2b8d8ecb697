"""The upload's local record as untrusted input and as a lock (issue 10 items 5 and 7)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from manifestkit.parts import PartPlan
from manifestkit.workflow.upload_state import new_state, write_state

from .faultproxy import FaultProxy
from .helpers import assert_parts_match, fetch_manifest, random_image, run_cli

PART = 256 * 1024


def _keys(s3server, bucket):
    return [o["Key"] for o in s3server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def _state_file(image):
    return image.parent / (image.name + ".manifestkit-state.json")


def _record(image, in_bucket, **fields):
    """A state file as ``upload`` writes it, then with ``fields`` changed (raw JSON values)."""
    size = image.stat().st_size
    plan = PartPlan.for_file(image, size, part_size=PART)
    state = new_state(
        image, plan, bucket=in_bucket, region="us-east-1", file_format="RAW", volume_gib=1
    )
    path = _state_file(image)
    write_state(path, state)
    doc = json.loads(path.read_text())
    doc.update(fields)
    path.write_text(json.dumps(doc))
    return path


def _refused_in_one_line(code, out, err, state_file):
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and err.startswith("manifestkit: error: ")
    assert str(state_file) in err and "delete" in err and "Traceback" not in err


# -- wrong types, not JSON, too big: exit 2, one line, nothing sent ------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"file_bytes": "1048576"},
        {"part_size": True},
        {"complete": "yes"},
        {"volume_gib": 1.5},
        {"bucket": ["b"]},
        {"s3_endpoint_url": 5},
        {"upload_id": None},
        {"upload_id": "../../elsewhere"},
        {"bucket": "Not_A_Bucket"},
        {"file_format": "QCOW2"},
        {"part_size": 0},
        {"extra": 1},
    ],
    ids=lambda f: "-".join(f"{k}={v!r}" for k, v in f.items()),
)
@pytest.mark.parametrize("resume", [True, False], ids=["resume", "new-upload"])
def test_state_file_with_wrong_fields_is_one_line_exit_2(
    fields, resume, s3server, bucket, tmp_path
):
    image = random_image(tmp_path / "d.raw", 4 * PART, seed=1)
    state_file = _record(image, bucket, **fields)  # fields may replace the bucket
    argv = ["upload", str(image), "-q", *s3server.cli_args()]
    argv += ["--resume"] if resume else ["--bucket", bucket]
    _refused_in_one_line(*run_cli(*argv), state_file)
    assert _keys(s3server, bucket) == []


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"\xff\xfe", b"[" * 100_000, b" " * (1024 * 1024) + b"{}", b"[]"],
    ids=["not-json", "not-utf8", "deep-nesting", "too-big", "not-an-object"],
)
def test_state_file_that_is_not_one_is_one_line_exit_2(content, s3server, bucket, tmp_path):
    image = random_image(tmp_path / "d.raw", 4 * PART, seed=2)
    state_file = _state_file(image)
    state_file.write_bytes(content)
    _refused_in_one_line(
        *run_cli("upload", str(image), "--resume", "-q", *s3server.cli_args()), state_file
    )


def test_a_huge_state_file_is_not_read_whole(tmp_path, monkeypatch):
    from manifestkit.errors import UsageError
    from manifestkit.workflow import upload_state

    path = tmp_path / "x.manifestkit-state.json"
    limit = upload_state.MAX_STATE_BYTES
    path.write_bytes(b" " * (10 * limit))
    asked = []
    real_open = open

    class Counting:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def read(self, n=-1):
            asked.append(n)
            return self.f.read(n)

    from manifestkit import files  # reads the state file for upload_state

    monkeypatch.setattr(files, "open", lambda p, m="r": Counting(real_open(p, m)), raising=False)
    with pytest.raises(UsageError, match="larger than"):
        upload_state.read_state(path)
    assert asked and all(0 < n <= limit + 1 for n in asked)


# -- a state file that lies about the image ------------------------------------------------------


@pytest.fixture
def stream_vmdk(tmp_path):
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img not installed")
    raw = random_image(tmp_path / "src.raw", 2 * 1024 * 1024, seed=3)
    vmdk = tmp_path / "disk.vmdk"
    subprocess.run(
        ["qemu-img", "convert", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, vmdk],
        check=True,
    )
    return vmdk


def test_resume_of_a_state_that_calls_a_vmdk_raw_is_refused(stream_vmdk, s3server, bucket):
    state_file = _record(stream_vmdk, bucket, file_format="RAW")
    code, out, err = run_cli("upload", str(stream_vmdk), "--resume", "-q", *s3server.cli_args())
    _refused_in_one_line(code, out, err, state_file)
    assert "records a RAW image, the image is VMDK" in err
    assert _keys(s3server, bucket) == []  # no RAW manifest, no part


def test_resume_of_a_state_that_calls_a_raw_vmdk_is_refused(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "d.raw", 4 * PART, seed=4)
    state_file = _record(image, bucket, file_format="VMDK")
    code, out, err = run_cli("upload", str(image), "--resume", "-q", *s3server.cli_args())
    _refused_in_one_line(code, out, err, state_file)
    assert "records a VMDK image, the image is RAW" in err
    assert _keys(s3server, bucket) == []


def test_resume_of_a_state_with_a_volume_too_small_for_the_image_is_refused(
    s3server, bucket, tmp_path
):
    image = tmp_path / "big.raw"
    with open(image, "wb") as out:  # sparse: 3 GiB + 1 byte needs a 4 GiB volume
        out.truncate(3 * 1024**3 + 1)
    state_file = _record(image, bucket, part_size=64 * 1024 * 1024, volume_gib=1)
    code, out, err = run_cli("upload", str(image), "--resume", "-q", *s3server.cli_args())
    _refused_in_one_line(code, out, err, state_file)
    assert "volume of 1 GiB" in err
    assert _keys(s3server, bucket) == []


def test_resume_by_manifest_of_a_manifest_that_calls_a_vmdk_raw_is_refused(
    stream_vmdk, s3server, bucket, tmp_path
):
    from manifestkit.workflow import UploadRequest, upload_image

    # a genuine RAW upload of exactly the VMDK's size: its manifest says RAW
    raw = random_image(tmp_path / "same-size.raw", stream_vmdk.stat().st_size, seed=6)
    first = upload_image(
        UploadRequest(image=str(raw), bucket=bucket, part_size=PART, record_state=False),
        s3server.settings(),
    )
    s3 = s3server.client()
    before = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    code, out, err = run_cli(
        "resume", first.manifest_url, str(stream_vmdk), "-q", *s3server.cli_args()
    )
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "VMDK image but the manifest describes a RAW" in err
    after = {o["Key"]: o["ETag"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert after == before  # no part replaced by the VMDK's bytes, no new manifest


# -- one upload of an image at a time ------------------------------------------------------------


def _start_upload(s3server, bucket, image, endpoint):
    return subprocess.Popen(
        [sys.executable, "-m", "manifestkit", "upload", str(image), "--bucket", bucket,
         "--part-size", str(PART), "--workers", "1", "-q", *s3server.cli_args(endpoint)],
        env=s3server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip


def test_a_second_upload_of_the_same_image_is_refused_while_one_runs(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "busy.raw", 40 * PART, seed=5)
    with FaultProxy(s3server.endpoint_url, delay=0.2) as proxy:
        first = _start_upload(s3server, bucket, image, proxy.url)
        try:
            deadline = time.monotonic() + 60
            while len(proxy.part_puts()) < 2:
                assert first.poll() is None, first.communicate()
                assert time.monotonic() < deadline, "the first upload did not get going"
                time.sleep(0.05)
            for extra in (["--bucket", bucket], ["--resume"], ["--bucket", bucket, "--new-upload"]):
                code, out, err = run_cli("upload", str(image), "-q", *extra, *s3server.cli_args())
                assert code == 1 and out == "", err
                assert err.count("\n") == 1 and "another manifestkit process is uploading" in err
                assert first.poll() is None  # refused while the first still runs
            puts_before = len(proxy.part_puts())
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
        assert puts_before < 40
        # the kernel released the dead process's lock: --resume runs and finishes the upload
        proxy.delay = 0.0
        code, out, err = run_cli(
            "upload", str(image), "--resume", "-q", *s3server.cli_args(proxy.url)
        )
        assert code == 0, err
        assert_parts_match(fetch_manifest(out.strip(), tmp_path / "m.xml"), image)
