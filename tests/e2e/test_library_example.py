"""The README's "Library API" example, read from the README, runs offline to a completed task."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "samples"

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    """The first python block under the README's "Library API" heading, as a user copies it."""
    section = README.read_text().split("## Library API", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_readme_library_example(tmp_path: Path, clean_env: Any) -> None:
    # its own process: moto's backends are process-wide, and the session sandbox lives here
    shutil.copytree(SAMPLES, tmp_path / "samples")
    (tmp_path / "example.py").write_text(readme_example())
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
