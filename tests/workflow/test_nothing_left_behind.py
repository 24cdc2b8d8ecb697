"""Nothing left behind (issue 10 item 4): temporary manifests go on SIGTERM/SIGHUP as on Ctrl-C,
and a temp file a killed writer left is removed by the next write in that folder."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

import pytest

from manifestkit.files import remove_stale

from . import hostile
from .helpers import random_image, run_cli


def _wait_for(predicate, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_removes_the_temporary_manifest(sig, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    with hostile.Hostile() as server:
        doc = hostile.upload_like(hostile.signer(server.endpoint), "bkt", "up/u1", "d.raw", 1)
        server.routes["/m.xml"] = hostile.drip(doc[:600], every=0.2)  # still downloading
        env = dict(os.environ, TMPDIR=str(temp))
        process = subprocess.Popen(
            [sys.executable, "-m", "manifestkit", "verify", server.url("/m.xml")]
            + ["--s3-endpoint-url", server.endpoint],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert _wait_for(lambda: any(temp.iterdir())), "no temporary manifest appeared"
            time.sleep(0.3)
            process.send_signal(sig)
            _, err = process.communicate(timeout=20)
        finally:
            process.kill()
    assert process.returncode == 128 + sig, err
    assert f"terminated ({signal.Signals(sig).name})" in err and "Traceback" not in err
    assert list(temp.iterdir()) == []


def test_a_stale_manifest_temp_file_is_removed_by_the_next_manifest_o(tmp_path):
    image = random_image(tmp_path / "disk.raw", 4096)
    folder = tmp_path / "out"
    folder.mkdir(mode=0o700)
    stale = folder / ".manifest-killed.tmp"  # what a SIGKILLed manifest -o leaves
    stale.write_bytes(b"<manifest>half")
    live = folder / ".manifest-live.tmp"  # another run still writing: locked, kept
    live.write_bytes(b"")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, out, err = run_cli(
            "manifest",
            str(image),
            "-b",
            "bkt",
            "--output-file",
            str(folder / "m.xml"),
            "--region",
            "us-east-1",
        )
        assert code == 0, err
        assert sorted(p.name for p in folder.iterdir()) == [".manifest-live.tmp", "m.xml"]
    assert oct((folder / "m.xml").stat().st_mode & 0o777) == "0o600"


def test_stale_files_are_left_alone_where_others_can_write(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)  # world-writable, not sticky: names can be swapped under us
    (shared / ".manifest-x.tmp").write_bytes(b"")
    assert remove_stale(str(shared), ".manifest-", ".tmp") == 0
    os.chmod(shared, 0o1777)  # sticky, like /tmp: only our own files, which others cannot move
    assert remove_stale(str(shared), ".manifest-", ".tmp") == 1
    other = shared / ".manifest-link.tmp"
    other.symlink_to(tmp_path / "elsewhere")
    assert remove_stale(str(shared), ".manifest-", ".tmp") == 0 and other.is_symlink()


def test_a_secret_key_on_the_command_line_is_warned_about_once(tmp_path):
    image = random_image(tmp_path / "disk.raw", 4096)
    argv = ["manifest", str(image), "-b", "bkt", "--output-file", str(tmp_path / "m.xml")]
    argv += ["--region", "us-east-1", "-O", "AKIDEXAMPLE", "-W", "s3cr3t-value"]
    code, out, err = run_cli(*argv)
    assert code == 0, err
    (line,) = [x for x in err.splitlines() if "process list" in x]
    assert line.startswith("manifestkit: warning: -W/--aws-secret-key on the command line")
    assert "AWS_SECRET_ACCESS_KEY" in line and "--profile" in line
    assert "s3cr3t-value" not in err + out
    code, out, err = run_cli(*argv[:-4], "--region", "us-east-1")  # no secret given: no warning
    assert "process list" not in err
