"""The README's "Library API" example, verbatim, runs offline and ends with a completed task."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

# Keep identical to the README section "Library API".
README_EXAMPLE = """
from manifestkit.sandbox import Sandbox
from manifestkit.workflow import (
    ImportInstanceRequest, LaunchSpec, UploadRequest, WaitSettings, import_instance,
)

with Sandbox() as sandbox:  # offline; for AWS use manifestkit.aws.AwsSettings(region=...)
    request = ImportInstanceRequest(
        upload=UploadRequest(
            image="samples/tiny-stream.vmdk", bucket="my-imports", create_bucket=True
        ),
        platform="Linux",
        launch=LaunchSpec(instance_type="t2.micro", availability_zone="us-east-1a"),
    )
    task = import_instance(request, sandbox.aws_settings(), wait=WaitSettings(interval=0.25))
    print(task.id, task.state, task.instance_id, task.volume_ids)
"""


@pytest.mark.slow
def test_readme_library_example(tmp_path: Path, clean_env: Any) -> None:
    # its own process: moto's backends are process-wide, and the session sandbox lives here
    shutil.copytree(SAMPLES, tmp_path / "samples")
    (tmp_path / "example.py").write_text(README_EXAMPLE)
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"import-i-\w+ completed i-[0-9a-f]+ \('vol-[0-9a-f]+',\)\n", done.stdout)
