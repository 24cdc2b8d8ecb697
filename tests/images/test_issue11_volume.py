"""Issue 11 item 1: the default volume holds both the disk and the file EC2 is told about.

``Image.Bytes`` is the file size; an importer refuses it above ``Volume.Size`` GiB. A fixed VHD of
exactly 1 GiB (Hyper-V's normal case) is 1 GiB + 512 bytes: its volume is 2 GiB, not 1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from manifestkit.cli import main
from manifestkit.images import ImageInfo, inspect_image
from manifestkit.images.rules import volume_gib_for
from manifestkit.manifest import read_manifest, validate_manifest

GiB = 1024**3

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="needs qemu-img")


@pytest.fixture
def fixed_vhd(tmp_path: Path) -> Path:
    """A 1 GiB fixed VHD made by qemu-img (sparse on disk: quick)."""
    path = tmp_path / "hyperv.vhd"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on"]
        + [str(path), "1G"],
        check=True,
    )
    return path


def qemu_virtual_size(path: Path, fmt: str) -> int:
    out = subprocess.run(
        ["qemu-img", "info", "-f", fmt, "--output=json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(json.loads(out)["virtual-size"])


def test_issue11_item1_rule_holds_disk_and_file():
    assert volume_gib_for(GiB, GiB) == 1
    assert volume_gib_for(GiB, GiB + 512) == 2
    assert volume_gib_for(GiB + 1, 10) == 2
    assert volume_gib_for(0, 0) == 1
    # an incompressible streamOptimized VMDK of 3 GiB: the grain markers make the file bigger
    info = ImageInfo("x.vmdk", "VMDK", "streamOptimized", 3 * GiB + 70_000, 3 * GiB, True)
    assert info.volume_gib == 4
    assert info.to_dict()["volume_gib"] == 4


def test_issue11_item1_fixed_vhd_inspect(fixed_vhd, capsys):
    info = inspect_image(fixed_vhd)
    assert info.capacity_bytes == qemu_virtual_size(fixed_vhd, "vpc") == GiB
    assert info.file_bytes == os.stat(fixed_vhd).st_size == GiB + 512
    assert info.volume_gib == 2
    assert main(["inspect", str(fixed_vhd), "--output", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["volume_gib"] == 2


def test_issue11_item1_fixed_vhd_manifest(fixed_vhd, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m.xml"
    code = main(["manifest", str(fixed_vhd), "-b", "my-bucket", "--output-file", str(out)])
    assert code == 0, capsys.readouterr().err
    header, parts = read_manifest(out)
    assert header.size == GiB + 512 == parts[-1].end + 1
    assert header.volume_size == 2
    problems = validate_manifest(out, capacity_bytes=GiB, file_bytes=GiB + 512)
    assert not [p for p in problems if p.severity == "error"]

    capsys.readouterr()
    code = main(
        ["manifest", str(fixed_vhd), "-b", "my-bucket", "--output-file", str(out), "--force"]
        + ["--volume-size", "1"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "2 GiB needed" in err and "--volume-size 2" in err
    assert len(err.strip().splitlines()) == 1


def test_issue11_item1_validate_refuses_small_volume(fixed_vhd, tmp_path, capsys, monkeypatch):
    """A manifest saying volume-size 1 for a 2^30 + 512-byte image is invalid, with or without
    --image (the file size is the manifest's own <size>)."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "m.xml"
    assert main(["manifest", str(fixed_vhd), "-b", "my-bucket", "--output-file", str(out)]) == 0
    small = out.read_bytes().replace(b"<volume-size>2<", b"<volume-size>1<")
    assert small != out.read_bytes()
    bad = tmp_path / "small.xml"
    bad.write_bytes(small)
    for extra in ([], ["--image", str(fixed_vhd)]):
        capsys.readouterr()
        assert main(["validate", str(bad), *extra]) == 2
        assert "volume-size 1 GiB is too small: 2 GiB needed" in capsys.readouterr().out
