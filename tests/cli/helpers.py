"""Running the CLI in-process and as a real process, for the tests of manifestkit.cli."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from manifestkit.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "samples"
STREAM = SAMPLES / "tiny-stream.vmdk"
RAW = SAMPLES / "tiny.raw"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def new_user_env(**extra: str) -> dict[str, str]:
    """A new user's environment: no AWS settings at all, then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MANIFESTKIT_"))}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update(extra)
    return env


def manifestkit(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> Any:
    """A real ``manifestkit`` process."""
    return subprocess.run(
        [sys.executable, "-m", "manifestkit", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
