"""Resuming: after SIGKILL and Ctrl-C, from the state file and from the manifest; fresh URLs."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from manifestkit.errors import ImageError
from manifestkit.manifest import read_manifest
from manifestkit.s3.presign import parse_presigned_url
from manifestkit.workflow import UploadRequest, resume_upload, upload_image

from .faultproxy import FaultProxy
from .helpers import MiB, assert_parts_match, fetch_manifest, http, random_image, run_cli

PART = 256 * 1024


def _start_upload(s3server, bucket, image, endpoint, *extra):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "manifestkit",
            "upload",
            str(image),
            "--bucket",
            bucket,
            "--part-size",
            str(PART),
            "--workers",
            "2",
            "-q",
            *s3server.cli_args(endpoint),
            *extra,
        ],
        env=s3server.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_puts(proxy, n, process, timeout=60.0):
    deadline = time.monotonic() + timeout
    while len(proxy.part_puts()) < n:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the upload did not get going"
        time.sleep(0.05)


def _good_parts_in_bucket(s3server, bucket, image):
    """Oracle: parts already in the bucket whose bytes are right (read back with boto3)."""
    state = json.loads((image.parent / (image.name + ".manifestkit-state.json")).read_text())
    prefix = f"{state['upload_id']}/"
    s3 = s3server.client()
    data = image.read_bytes()
    good = 0
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        index = int(obj["Key"].rsplit(".part", 1)[1])
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        good += body == data[index * PART : (index + 1) * PART]
    return good


def test_sigkill_then_resume_sends_only_the_missing_parts(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "killed.raw", 40 * PART, seed=21)
    with FaultProxy(s3server.endpoint_url, delay=0.15) as proxy:
        process = _start_upload(s3server, bucket, image, proxy.url)
        _wait_for_puts(proxy, 10, process)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL
        time.sleep(0.5)  # requests the dead process left in flight reach the server or die
        already = _good_parts_in_bucket(s3server, bucket, image)
        assert 10 <= already < 40
        proxy.delay = 0.0
        proxy.reset_counts()
        code, out, err = run_cli(
            "upload",
            str(image),
            "--resume",
            "-q",
            "--output",
            "json",
            "--workers",
            "3",
            *s3server.cli_args(proxy.url),
        )
        assert code == 0, err
        doc = json.loads(out)
        assert len(proxy.part_puts()) == 40 - already == doc["put"]
        assert doc["kept"] == already and doc["manifest_written"]
        code, vout, verr = run_cli(
            "verify",
            doc["manifest_url"],
            "--image",
            str(image),
            "--s3-endpoint-url",
            proxy.url,  # the endpoint the upload used, so its URLs point there
        )
        assert code == 0, vout + verr
        assert_parts_match(fetch_manifest(doc["manifest_url"], tmp_path / "m.xml"), image)


def test_ctrl_c_exits_130_and_says_how_to_resume(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "interrupted.raw", 40 * PART, seed=22)
    with FaultProxy(s3server.endpoint_url, delay=0.15) as proxy:
        process = _start_upload(s3server, bucket, image, proxy.url)
        _wait_for_puts(proxy, 5, process)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert time.monotonic() - started < 10, "stopping took too long"
        assert process.returncode == 130, err
        assert out == ""  # no URL: there is no manifest yet
        assert "manifestkit upload" in err and "--resume" in err and "Traceback" not in err
        keys = [
            o["Key"] for o in s3server.client().list_objects_v2(Bucket=bucket).get("Contents", [])
        ]
        assert keys and not any(k.endswith("manifest.xml") for k in keys)
        proxy.delay = 0.0
        code, out, err = run_cli("upload", str(image), "--resume", "-q", *s3server.cli_args())
        assert code == 0, err
        assert_parts_match(fetch_manifest(out.strip(), tmp_path / "m.xml"), image)


def test_running_the_interrupted_command_again_refuses_and_names_the_resume(
    s3server, bucket, tmp_path
):
    # the same command again after Ctrl-C would send everything under a new id and overwrite
    # the record of the parts already sent, so nothing could resume or delete them any more
    image = random_image(tmp_path / "again.raw", 40 * PART, seed=23)
    with FaultProxy(s3server.endpoint_url, delay=0.15) as proxy:
        process = _start_upload(s3server, bucket, image, proxy.url)
        _wait_for_puts(proxy, 5, process)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
        assert process.returncode == 130
    state_file = image.parent / (image.name + ".manifestkit-state.json")
    recorded = state_file.read_bytes()
    s3 = s3server.client()
    before = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    argv = ["upload", str(image), "--bucket", bucket, "--part-size", str(PART), "-q"]
    code, out, err = run_cli(*argv, *s3server.cli_args())
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and str(state_file) in err
    assert f"manifestkit upload {image} --resume" in err
    assert state_file.read_bytes() == recorded
    assert {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])} == before
    code, out, err = run_cli("upload", str(image), "--resume", "-q", *s3server.cli_args())
    assert code == 0, err
    assert_parts_match(fetch_manifest(out.strip(), tmp_path / "m.xml"), image)
    # once complete, a new upload of the same image is fine again
    code, out, err = run_cli(*argv, *s3server.cli_args())
    assert code == 0, err


def test_resume_from_manifest_renews_expiring_urls_without_resending(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "aging.raw", 3 * MiB + 5, seed=23)
    signed = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=6, hours=12)
    first = upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB),
        s3server.settings(),
        now=signed,
    )
    old_manifest = tmp_path / "old.xml"
    s3server.client().download_file(bucket, first.manifest_key, str(old_manifest))
    with FaultProxy(s3server.endpoint_url) as proxy:
        result = resume_upload(
            str(old_manifest), str(image), s3server.settings(s3_endpoint_url=proxy.url)
        )
        assert proxy.part_puts() == [] and result.stats.kept == 4
        assert result.manifest_written
        new_manifest = tmp_path / "new.xml"
        s3server.client().download_file(bucket, first.manifest_key, str(new_manifest))
        header, parts = read_manifest(str(new_manifest))
        expires = parse_presigned_url(parts[0].get_url).expires_at
        assert expires - dt.datetime.now(dt.timezone.utc) > dt.timedelta(days=6)
        assert_parts_match(new_manifest, image)
    # a manifest with long-lived URLs is kept as it is
    again = resume_upload(str(new_manifest), str(image), s3server.settings())
    assert not again.manifest_written and again.stats.kept == 4 and again.stats.put == 0


def test_resume_by_url_resends_a_part_that_was_overwritten(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "d.raw", 3 * MiB, seed=24)
    first = upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB), s3server.settings()
    )
    _, parts = read_manifest(str(fetch_manifest(first.manifest_url, tmp_path / "m.xml")))
    s3server.client().put_object(Bucket=bucket, Key=parts[1].key, Body=bytes(MiB))
    code, out, err = run_cli(
        "resume", first.manifest_url, str(image), "-q", "--output", "json", *s3server.cli_args()
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["put"] == 1 and doc["kept"] == 2
    assert_parts_match(tmp_path / "m.xml", image)


def test_resume_refuses_an_image_of_another_size(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "d.raw", 2 * MiB, seed=25)
    first = upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB), s3server.settings()
    )
    grown = random_image(tmp_path / "grown.raw", 2 * MiB + 1, seed=25)
    with pytest.raises(ImageError, match="manifest describes"):
        resume_upload(first.manifest_url, str(grown), s3server.settings())
    code, out, err = run_cli("resume", first.manifest_url, str(grown), *s3server.cli_args())
    assert code == 2 and "manifest describes" in err
    # the state-file route refuses too
    with open(image, "ab") as f:
        f.write(b"x")
    code, out, err = run_cli("upload", str(image), "--resume", *s3server.cli_args())
    assert code == 2 and "image changed" in err
    # and nothing was deleted
    assert http("GET", first.manifest_url)[0] == 200


def test_resume_without_a_recorded_upload(s3server, tmp_path):
    image = random_image(tmp_path / "never.raw", MiB)
    code, out, err = run_cli("upload", str(image), "--resume", *s3server.cli_args())
    assert code == 2 and "no upload of" in err


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--part-size", str(2 * MiB)], [f"--part-size {MiB}", f"--part-size {2 * MiB}"]),
        (["--prefix", "other"], ["--prefix 'first'", "--prefix 'other'"]),
    ],
)
def test_resume_refuses_another_part_size_or_prefix(s3server, bucket, tmp_path, flags, named):
    image = random_image(tmp_path / "d.raw", 2 * MiB, seed=26)
    state_dir = tmp_path / "states"
    upload_image(
        UploadRequest(
            image=str(image),
            bucket=bucket,
            prefix="first",
            part_size=MiB,
            state_dir=str(state_dir),
            resume=False,
        ),
        s3server.settings(),
    )
    recorded = [p.read_bytes() for p in state_dir.iterdir()]
    code, out, err = run_cli(
        "upload",
        str(image),
        "--resume",
        "--state-dir",
        str(state_dir),
        *flags,
        *s3server.cli_args(),
    )
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("manifestkit: error: ")
    assert all(n in lines[0] for n in named), lines[0]
    # the recorded upload is untouched, and giving the recorded values (or none) still works
    assert [p.read_bytes() for p in state_dir.iterdir()] == recorded
    code, out, err = run_cli(
        "upload",
        str(image),
        "--resume",
        "--state-dir",
        str(state_dir),
        "--prefix",
        "first",
        "--part-size",
        str(MiB),
        "-q",
        *s3server.cli_args(),
    )
    assert code == 0, err


def test_state_dir_option(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "d.raw", MiB)
    states = tmp_path / "states"
    code, out, err = run_cli(
        "upload",
        str(image),
        "--bucket",
        bucket,
        "--state-dir",
        str(states),
        "-q",
        *s3server.cli_args(),
    )
    assert code == 0, err
    (found,) = list(states.iterdir())
    assert oct(found.stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "d.raw.manifestkit-state.json").exists()
    os.utime(image)  # touched, not changed: resume keeps every part
    code, out, err = run_cli(
        "upload",
        str(image),
        "--resume",
        "--state-dir",
        str(states),
        "--output",
        "json",
        *s3server.cli_args(),
    )
    assert code == 0, err
    assert json.loads(out)["kept"] == 1


def test_ctrl_c_before_anything_is_recorded_does_not_promise_a_resume(
    s3server, bucket, tmp_path, monkeypatch
):
    # Ctrl-C while converting or checking the bucket: "Resume with --resume" led only to
    # "no upload of ... to resume"
    import manifestkit.workflow.upload

    image = random_image(tmp_path / "early.raw", 4 * PART, seed=24)
    real_connect = manifestkit.workflow.upload.connect

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(manifestkit.workflow.upload, "connect", interrupted)
    argv = ["upload", str(image), "--bucket", bucket, "--part-size", str(PART), "-q"]
    code, out, err = run_cli(*argv, *s3server.cli_args())
    assert code == 130 and out == ""
    assert "--resume" not in err and "run the same command again" in err
    assert not (tmp_path / "early.raw.manifestkit-state.json").exists()
    code, _, err = run_cli(*argv, "--resume", *s3server.cli_args())
    assert code == 2 and "no upload of" in err  # what the old hint led to
    monkeypatch.setattr(manifestkit.workflow.upload, "connect", real_connect)
    code, out, err = run_cli(*argv, *s3server.cli_args())  # what the new one says to do
    assert code == 0, err


def test_resume_of_a_complete_single_part_upload_keeps_its_manifest(s3server, bucket, tmp_path):
    # an image smaller than the part size: the manifest's one part reads back as its own size,
    # not the recorded part size, and every resume wrote a new manifest ("describes another
    # upload")
    image = random_image(tmp_path / "small.raw", 100_000, seed=25)
    argv = ["upload", str(image), "-q", "--output", "json", *s3server.cli_args()]
    code, out, err = run_cli(*argv, "--bucket", bucket)
    assert code == 0, err
    first = json.loads(out)
    before = s3server.client().head_object(Bucket=bucket, Key=first["manifest_key"])["ETag"]
    code, out, err = run_cli(*argv, "--resume")
    assert code == 0, err
    again = json.loads(out)
    assert again["manifest_written"] is False and again["kept"] == 1
    assert again["expires_at"] == first["expires_at"]
    after = s3server.client().head_object(Bucket=bucket, Key=first["manifest_key"])["ETag"]
    assert after == before


def test_resume_by_url_finishes_the_images_own_record(s3server, bucket, tmp_path):
    # `import-* --no-upload` leaves the image's record unfinished and hints at
    # `resume URL IMAGE`; once that has run, a later `upload IMAGE` must not be refused
    image = random_image(tmp_path / "n.raw", 2 * MiB, seed=25)
    first = upload_image(
        UploadRequest(image=str(image), bucket=bucket, part_size=MiB), s3server.settings()
    )
    state_file = image.parent / (image.name + ".manifestkit-state.json")
    record = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({**record, "complete": False}))
    argv = ["upload", str(image), "--bucket", bucket, "-q", *s3server.cli_args()]
    assert run_cli(*argv)[0] == 2  # refused: the record says an upload is unfinished
    code, _, err = run_cli("resume", first.manifest_url, str(image), "-q", *s3server.cli_args())
    assert code == 0, err
    assert json.loads(state_file.read_text())["complete"] is True
    code, _, err = run_cli(*argv)
    assert code == 0, err
