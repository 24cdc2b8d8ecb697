"""Convert while uploading (issue 13): ``upload --convert`` streams the conversion into the parts
(no local file), resumes by converting again, reads whole disks and pipes. Oracles: the parts
fetched back through the manifest's GET URLs and ``qemu-img compare`` against the source."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from convert.helpers import SOURCES, needs_qemu, qemu_make, write_mixed_raw
from loopdev import loop_device, needs_losetup

from manifestkit.errors import ImageError
from manifestkit.manifest import read_manifest
from manifestkit.progress import NoProgress
from manifestkit.workflow import UploadRequest, upload_image
from manifestkit.workflow.stream_upload import upload_streamed

from .faultproxy import FaultProxy
from .helpers import (
    MiB,
    assert_same_disk,
    download_parts,
    fetch_manifest,
    http,
    random_image,
    run_cli,
)

PART = 256 * 1024


@pytest.fixture
def empty_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR pointed at an empty folder, for this process and its children."""
    folder = tmp_path / "tmpdir"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _upload(s3server, bucket, image, *extra, part_size: int = PART) -> dict:
    code, out, err = run_cli(
        "upload",
        str(image),
        "--bucket",
        bucket,
        "--convert",
        "--part-size",
        str(part_size),
        "--output",
        "json",
        *s3server.cli_args(),
        *extra,
    )
    assert code == 0, err
    return json.loads(out)


@needs_qemu
@pytest.mark.parametrize(
    ("made", "fmt", "options"),
    [("raw", None, ()), *SOURCES],
    ids=["raw", *(s[0] for s in SOURCES)],
)
def test_every_source_format_streams_and_reads_back_theassert_same_disk(
    s3server, bucket, tmp_path, empty_tmpdir, made, fmt, options
):
    raw = tmp_path / "src.raw"
    write_mixed_raw(raw)
    source = raw if fmt is None else qemu_make(raw, tmp_path / f"src.{fmt}", fmt, *options)
    states = tmp_path / "states"
    # the CLI converts what EC2 does not take as it is (VMDKs other than streamOptimized) ...
    converts = fmt == "vmdk" and made != "vmdk-streamOptimized"
    doc = _upload(s3server, bucket, source, "--state-dir", str(states), part_size=64 * 1024)
    assert doc["converted"] == converts
    shutil.rmtree(states)
    # ... and the library streams any of them converted
    request = UploadRequest(
        image=str(source), bucket=bucket, part_size=64 * 1024, state_dir=str(states), convert=True
    )
    doc = upload_streamed(request, s3server.settings()).to_dict()
    assert doc["converted"] and doc["file_format"] == "VMDK"
    assert list(empty_tmpdir.iterdir()) == []  # no temporary copy, not even the manifest
    assert {p.name for p in tmp_path.iterdir()} == {"src.raw", source.name, "states", "tmpdir"} | {
        p.name
        for p in tmp_path.glob("src-*.vmdk")  # twoGbMaxExtent's extent files
    } | {p.name for p in tmp_path.glob("src-f*.vmdk")}
    uploaded, parts = download_parts(doc["manifest_url"], tmp_path)
    assert len(parts) == doc["parts"] > 1
    assert_same_disk(uploaded, raw, "raw")
    state = json.loads(next(states.iterdir()).read_text())
    assert state["complete"] and state["file_bytes"] == doc["file_bytes"]


def _interrupted_run(s3server, bucket, image, proxy, states, sig):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "manifestkit",
            "upload",
            str(image),
            "--convert",
            "--bucket",
            bucket,
            "--part-size",
            str(PART),
            "--workers",
            "2",
            "--state-dir",
            str(states),
            "-q",
            *s3server.cli_args(proxy.url),
        ],
        env=s3server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while len(proxy.part_puts()) < 6:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the upload did not get going"
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=30)
    time.sleep(0.3)  # requests a killed process left in flight reach the server or die
    return process.returncode, out, err


def _parts_before(s3server, bucket) -> dict[str, str]:
    s3 = s3server.client()
    return {
        o["Key"]: o["ETag"].strip('"')
        for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    }


def _sparse_vmdk(tmp_path: Path, seed: int) -> tuple[Path, Path]:
    """A monolithicSparse VMDK (EC2 refuses it: --convert streams it) of random data."""
    raw = random_image(tmp_path / "disk.raw", 40 * PART, seed=seed)
    return qemu_make(raw, tmp_path / "disk.vmdk", "vmdk"), raw


@needs_qemu
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_an_interrupted_streamed_upload_resumes_sending_only_the_missing_parts(
    s3server, bucket, tmp_path, sig
):
    image, raw = _sparse_vmdk(tmp_path, 41)
    states = tmp_path / "states"
    with FaultProxy(s3server.endpoint_url, delay=0.15) as proxy:
        code, out, err = _interrupted_run(s3server, bucket, image, proxy, states, sig)
        if sig == signal.SIGINT:
            assert code == 130 and out == ""
            assert "--resume" in err and "--convert" in err and "Traceback" not in err
        else:
            assert code == -signal.SIGKILL
        before = _parts_before(s3server, bucket)
        assert before and not any(k.endswith("manifest.xml") for k in before)
        proxy.delay = 0.0
        proxy.reset_counts()
        code, out, err = run_cli(
            "upload",
            str(image),
            "--resume",
            "--state-dir",
            str(states),
            "--output",
            "json",
            *s3server.cli_args(proxy.url),
        )
        assert code == 0, err
        doc = json.loads(out)
        assert "converting again" in err
        uploaded, parts = download_parts(doc["manifest_url"], tmp_path)
    # oracle: the parts already there whose bytes are the final ones were kept, the rest sent
    data = uploaded.read_bytes()
    import hashlib

    good = sum(
        before.get(p.key) == hashlib.md5(data[p.start : p.end + 1]).hexdigest() for p in parts
    )
    assert good >= 5
    assert doc["kept"] == good and doc["put"] == len(parts) - good == len(proxy.part_puts())
    assert doc["converted"] and doc["manifest_written"]
    assert_same_disk(uploaded, raw, "raw")


@needs_qemu
def test_a_source_changed_since_the_run_refuses_the_resume(s3server, bucket, tmp_path):
    image, _ = _sparse_vmdk(tmp_path, 42)
    states = tmp_path / "states"
    with FaultProxy(s3server.endpoint_url, delay=0.15) as proxy:
        _interrupted_run(s3server, bucket, image, proxy, states, signal.SIGINT)
    with open(image, "r+b") as f:
        f.seek(5 * PART)
        f.write(b"changed")
    os.utime(image, ns=(time.time_ns(), time.time_ns() + 10**9))
    code, out, err = run_cli(
        "upload", str(image), "--resume", "--state-dir", str(states), *s3server.cli_args()
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "changed since the upload started" in err
    assert "modified" in err and "start a new upload" in err
    keys = _parts_before(s3server, bucket)
    assert not any(k.endswith("manifest.xml") for k in keys)


@needs_qemu
def test_a_damaged_stream_record_is_refused(s3server, bucket, tmp_path):
    image, _ = _sparse_vmdk(tmp_path, 43)
    states = tmp_path / "states"
    _upload(s3server, bucket, image, "--state-dir", str(states))
    record = next(states.iterdir())
    state = json.loads(record.read_text())
    state["complete"] = False
    state["stream"]["converter"]["level"] = "9; rm -rf"
    record.write_text(json.dumps(state))
    code, _, err = run_cli(
        "upload", str(image), "--resume", "--state-dir", str(states), *s3server.cli_args()
    )
    assert code == 2 and "level" in err and err.count("\n") == 1


def test_a_raw_disk_from_a_pipe(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "piped.raw", 5 * PART + 512, seed=44)
    cmd = [sys.executable, "-m", "manifestkit", "upload", "-", "--bucket", bucket]
    cmd += ["--part-size", str(PART), "--output", "json", *s3server.cli_args()]
    with open(image, "rb") as stdin:
        done = subprocess.run(
            cmd, stdin=stdin, env=s3server.env(), capture_output=True, text=True, check=False
        )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["file_format"] == "RAW" and doc["state_file"] is None
    assert doc["file_bytes"] == image.stat().st_size and doc["parts"] == 6
    header, parts = read_manifest(str(fetch_manifest(doc["manifest_url"], tmp_path / "m.xml")))
    data = image.read_bytes()
    for part in parts:
        assert http("GET", part.get_url) == (200, data[part.start : part.end + 1])
    # a pipe that ends mid-sector was cut short: one line, no manifest
    s3 = s3server.client()
    done = subprocess.run(
        cmd, input=data[:-100], env=s3server.env(), capture_output=True, check=False
    )
    # with --output json the error is the JSON document (issue 11 item 10)
    assert done.returncode == 2 and json.loads(done.stdout)["error"]["exit_code"] == 2
    err = done.stderr.decode()
    assert "cut short" in err and err.count("manifestkit: error:") == 1
    objects = s3.list_objects_v2(Bucket=bucket).get("Contents", [])
    assert len([o for o in objects if o["Key"].endswith("manifest.xml")]) == 1  # the first run's
    # and the help says such an upload cannot be resumed
    code, out, _ = run_cli("upload", "--help")
    assert "standard input" in " ".join(out.split()) and "cannot be resumed" in " ".join(
        out.split()
    )


def test_a_whole_disk_needs_convert_and_a_fifo_stays_refused(s3server, bucket, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, _, err = run_cli("upload", str(fifo), "--bucket", bucket, "--convert")
    assert code == 2 and "FIFO" in err


@needs_losetup
@needs_qemu
def test_a_loop_device_streams_converted_and_resumes(s3server, bucket, tmp_path, empty_tmpdir):
    backing = tmp_path / "disk.img"
    with open(backing, "wb") as f:  # sparse 64 MiB with data in a few places
        f.truncate(64 * MiB)
        for spot in (0, 17 * MiB + 4096, 63 * MiB):
            f.seek(spot)
            f.write(os.urandom(300_000))
    states = tmp_path / "states"
    with loop_device(backing) as device:
        code, _, err = run_cli("upload", device, "--bucket", bucket, *s3server.cli_args())
        assert code == 2 and "--convert" in err and err.count("\n") == 1
        doc = _upload(s3server, bucket, device, "--state-dir", str(states))
        assert doc["converted"] and doc["file_bytes"] < 2 * MiB  # zero grains are not stored
        uploaded, parts = download_parts(doc["manifest_url"], tmp_path)
        assert_same_disk(uploaded, device, "raw")
        assert list(empty_tmpdir.iterdir()) == []
        # resuming the complete upload converts again and sends nothing
        record = next(states.iterdir())
        state = json.loads(record.read_text())
        assert state["stream"]["source"]["kind"] == "device"
        state["complete"] = False
        record.write_text(json.dumps(state))
        again = json.loads(
            run_cli(
                "upload",
                device,
                "--resume",
                "--state-dir",
                str(states),
                "--output",
                "json",
                *s3server.cli_args(),
            )[1]
        )
        assert again["kept"] == len(parts) and again["put"] == 0
        assert again["manifest_url"].split("?")[0] == doc["manifest_url"].split("?")[0]
        # the import commands take the disk too
        code, out, err = run_cli(
            "import-volume", device, "--convert", "--local", "-z", "us-east-1a", "-q"
        )
        assert code == 0, err


@needs_losetup
def test_a_device_that_errors_mid_read_is_one_line_with_the_resume_command(
    s3server, bucket, tmp_path
):
    # far larger than what the upload may hold read ahead ((workers + queued parts) x part size
    # + the deflate pool's buffers), so the cut is always met by a read, never passed by one
    backing = random_image(tmp_path / "failing.img", 64 * MiB, seed=45)
    states = tmp_path / "states"

    class CutsTheDisk(NoProgress):
        """Truncates the loop device's file once a MiB is converted: the device still says
        64 MiB, and reads past the file's new end fail with EIO, as a failing disk's do."""

        done = 0

        def advance(self, amount: int) -> None:
            self.done += amount
            if self.done >= MiB:
                os.truncate(backing, 2 * MiB)

    with loop_device(backing) as device:
        request = UploadRequest(
            image=device, bucket=bucket, part_size=PART, state_dir=str(states), convert=True
        )
        with pytest.raises(ImageError) as caught:
            upload_image(request, s3server.settings(), progress=CutsTheDisk())
    error = caught.value
    assert error.message.startswith(f"{device}: ") and "Input/output error" in error.message
    assert f"manifestkit upload {device} --resume --state-dir {states}" in (error.fix or "")
    assert "\n" not in error.message + (error.fix or "")
    listed = s3server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    assert listed and not [o for o in listed if o["Key"].endswith("manifest.xml")]
    state = json.loads(next(states.iterdir()).read_text())
    assert not state["complete"] and state["file_bytes"] == 0
