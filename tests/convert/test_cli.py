"""``manifestkit convert``: JSON summary, text line, usage errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from manifestkit.cli import main

from .helpers import assert_same_disk, needs_qemu, qemu_make

pytestmark = needs_qemu


def test_json_summary(mixed_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = qemu_make(
        mixed_raw, tmp_path / "disk.vhd", "vpc", "subformat=dynamic", "force_size=on"
    )
    out = tmp_path / "disk.vmdk"
    code = main(["convert", str(source), str(out), "--workers", "2", "--output", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)  # exactly one JSON document
    assert doc["source"] == str(source)
    assert (doc["source_format"], doc["source_subformat"]) == ("VHD", "dynamic")
    assert doc["output"] == str(out)
    assert doc["output_bytes"] == out.stat().st_size
    assert doc["capacity_bytes"] == mixed_raw.stat().st_size
    assert (doc["format"], doc["subformat"], doc["importable"]) == ("VMDK", "streamOptimized", True)
    assert doc["seconds"] >= 0
    assert_same_disk(source, out, "vpc")


def test_text_and_force(
    mixed_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "disk.vmdk"
    assert main(["convert", str(mixed_raw), str(out), "-q"]) == 0
    assert "streamOptimized" in capsys.readouterr().out
    assert main(["convert", str(mixed_raw), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(mixed_raw), str(out), "--force"]) == 0


def test_bad_workers(mixed_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(mixed_raw), str(tmp_path / "x.vmdk"), "--workers", "0"]) == 2
    assert "--workers" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "x.vmdk")


def test_missing_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", str(tmp_path / "nope.vmdk"), str(tmp_path / "x.vmdk")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("manifestkit: error: ") and "nope.vmdk" in err and "\n" not in err


def test_dash_is_not_a_file_named_dash(
    mixed_raw: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """'-' means stdout/stdin elsewhere (manifest -o -, validate -); convert cannot stream there,
    so it says so instead of quietly writing a file called '-'."""
    monkeypatch.chdir(tmp_path)
    assert main(["convert", str(mixed_raw), "-"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("manifestkit: error: ") and err.count("\n") == 1 and "./-" in err
    assert not (tmp_path / "-").exists()
    assert main(["convert", "-q", str(mixed_raw), "./-"]) == 0  # the way to ask for that name
    assert (tmp_path / "-").stat().st_size > 512
