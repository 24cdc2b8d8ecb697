"""Issue 11 item 4: disks of 16 TiB and more are refused before converting; `inspect` of an
image that parses exits 0 even when the part size makes too many parts, naming one that works."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from manifestkit.cli import main
from manifestkit.parts import MAX_PARTS, PartPlan
from manifestkit.sizes import MiB, TiB, parse_size


def sparse(path: Path, size: int) -> Path:
    try:
        with open(path, "wb") as f:
            f.truncate(size)
    except OSError as exc:  # a file system without sparse files this large
        pytest.skip(f"cannot make a {size}-byte sparse file: {exc}")
    return path


def test_issue11_item4_inspect_10tib_raw_names_working_part_size(tmp_path, capsys):
    img = sparse(tmp_path / "big.raw", 10 * TiB)
    assert main(["inspect", str(img), "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["importable"] is False
    assert doc["parts"] == -(-10 * TiB // (10 * MiB)) > MAX_PARTS
    (problem,) = [p for p in doc["problems"] if "part" in p]
    suggested = re.search(r"--part-size (\S+) or more", problem).group(1)
    # the suggestion really works, and is the smallest whole MiB that does
    size = parse_size(suggested)
    assert PartPlan.for_file(img, 10 * TiB, part_size=size).count <= MAX_PARTS
    assert -(-10 * TiB // (size - MiB)) > MAX_PARTS

    assert main(["inspect", str(img), "--part-size", suggested, "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["importable"] is True and doc["problems"] == []

    assert main(["inspect", str(img)]) == 0  # text output too
    out = capsys.readouterr().out
    assert "importable   no" in out and f"--part-size {suggested}" in out


def _vmdk_of_16tib(folder):
    """Two 8 TiB flat extents over one sparse file: a 16 TiB disk on any file system."""
    sparse(folder / "flat.raw", 8 * TiB)
    sectors = 8 * TiB // 512
    desc = folder / "huge.vmdk"
    desc.write_text(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n"
        'createType="monolithicFlat"\n\n'
        f'RW {sectors} FLAT "flat.raw" 0\nRW {sectors} FLAT "flat.raw" 0\n\n'
        'ddb.adapterType = "lsilogic"\n'
    )
    return desc


def test_issue11_item4_convert_refuses_16tib_before_converting(tmp_path, capsys):
    desc = _vmdk_of_16tib(tmp_path)
    assert main(["inspect", str(desc), "--output", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["capacity_bytes"] == 16 * TiB and doc["importable"] is False
    assert any("under 16 TiB" in p for p in doc["problems"])

    out = tmp_path / "out.vmdk"
    assert main(["convert", str(desc), str(out)]) == 2
    err = capsys.readouterr().err
    assert "under 16 TiB" in err and len(err.strip().splitlines()) == 1
    assert "does not read back" not in err
    assert not out.exists()


def test_issue11_item4_streamed_convert_upload_refuses_16tib_before_sending(tmp_path, monkeypatch):
    """``upload --convert`` converts while it uploads: the limit is checked before the bucket is
    even looked at (a connection attempt fails the test)."""
    from manifestkit.aws import AwsSettings
    from manifestkit.errors import NotImportableError
    from manifestkit.workflow import UploadRequest
    from manifestkit.workflow import upload as upload_module
    from manifestkit.workflow.stream_upload import upload_streamed

    def no_connection(*args, **kwargs):
        raise AssertionError("connected to S3 for a disk that cannot be imported")

    monkeypatch.setattr(upload_module, "connect", no_connection)
    desc = _vmdk_of_16tib(tmp_path)
    request = UploadRequest(
        image=str(desc), bucket="my-bucket", convert=True, state_dir=str(tmp_path / "state")
    )
    with pytest.raises(NotImportableError, match="under 16 TiB"):
        upload_streamed(request, AwsSettings(region="us-east-1", isolated=True))
