"""Real ``manifestkit`` processes: the README's first command with ``--local``, and ``tasks
--watch`` writing to pipes (not a terminal)."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import manifestkit

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"


@pytest.mark.slow
def test_readme_first_command_import_instance_local_wait(tmp_path: Path, clean_env: Any) -> None:
    shutil.copytree(SAMPLES, tmp_path / "samples")
    started = time.monotonic()
    done = manifestkit(
        ["import-instance", "samples/tiny-stream.vmdk", "-p", "Windows", "--local", "--wait"],
        clean_env(),
        tmp_path,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0].split()
    assert first[0].startswith("import-i-") and first[1] == "completed"
    assert re.search(r"^  instance   i-[0-9a-f]+$", done.stdout, re.M)
    assert re.search(r"^  volume     vol-[0-9a-f]+$", done.stdout, re.M)
    size = (SAMPLES / "tiny-stream.vmdk").stat().st_size
    assert f"({100}%)" in done.stdout and str(size) not in done.stderr
    # nothing left beside the image: the upload record of a throwaway sandbox is thrown away too
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == sorted(
        p.name for p in SAMPLES.iterdir()
    )
    assert "Traceback" not in done.stderr
    assert elapsed < 60


@pytest.mark.slow
def test_import_volume_local_wait_json(tmp_path: Path, clean_env: Any) -> None:
    shutil.copyfile(SAMPLES / "tiny.raw", tmp_path / "tiny.raw")
    done = manifestkit(
        [
            "import-volume",
            "tiny.raw",
            "-z",
            "us-east-1b",
            "-s",
            "2",
            "--local",
            "--wait",
            "--output",
            "json",
        ],
        clean_env(),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)["task"]
    assert task["state"] == "completed" and task["kind"] == "volume"
    assert task["availability_zone"] == "us-east-1b" and task["volume_gib"] == 2
    assert task["volume_ids"] and task["bytes_converted"] == (tmp_path / "tiny.raw").stat().st_size


def test_tasks_local_points_to_the_sandbox_and_dry_run_works_with_local(
    tmp_path: Path, clean_env: Any
) -> None:
    shutil.copyfile(SAMPLES / "tiny.raw", tmp_path / "tiny.raw")
    # a --local sandbox of its own would always be empty: say what works instead
    done = manifestkit(["tasks", "--local"], clean_env(), tmp_path)
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert "run manifestkit sandbox" in done.stderr
    done = manifestkit(
        ["import-instance", "tiny.raw", "-p", "Windows", "--local", "--dry-run"],
        clean_env(),
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "would have been allowed" in done.stdout


def test_tasks_watch_in_a_pipe_prints_a_line_per_change(
    sandbox: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: Any
) -> None:
    from manifestkit.workflow import ImportVolumeRequest, UploadRequest, import_volume

    # the sandbox runs in this process: pace its transfer so there is something to watch
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_DELAY", "0.06")
    shutil.copyfile(SAMPLES / "tiny.raw", tmp_path / "tiny.raw")
    task = import_volume(
        ImportVolumeRequest(
            availability_zone="us-east-1a",
            upload=UploadRequest(image=str(tmp_path / "tiny.raw"), bucket=bucket, part_size=1024),
        ),
        sandbox.aws_settings(),
    )
    env = clean_env(**sandbox.env())
    done = manifestkit(["tasks", task.id, "--watch", "--interval", "0.05"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "\r" not in done.stderr and "\x1b" not in done.stderr  # no progress bar off a TTY
    pattern = re.compile(
        rf"^\d\d:\d\d:\d\d {task.id} (active|completed)(: .*)?( \[.*\])?( -> .*)?$"
    )
    assert lines and all(pattern.match(line) for line in lines), lines
    # 32 parts, each changing the status message, over ~2 s (40 polls): a line per tenth of
    # progress and per state at most, never one per poll or per message
    assert len(lines) == len(set(lines)) and len(lines) <= 12, lines
    assert lines[-1].split()[2] == "completed"
    assert done.stdout.splitlines()[0] == f"{task.id}  completed" or done.stdout.startswith(
        f"{task.id}  completed"
    )
