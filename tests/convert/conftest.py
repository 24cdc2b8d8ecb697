"""Fixtures for the converter tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import write_mixed_raw


@pytest.fixture(scope="session")
def mixed_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sources") / "mixed.raw"
    write_mixed_raw(path)
    return path
