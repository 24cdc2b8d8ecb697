"""The committed samples: real, tiny, and remade the same way by samples/make_samples.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from manifestkit.images import inspect_image

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
NAMES = ("tiny-stream.vmdk", "tiny-dynamic.vhd", "tiny.raw")


def test_samples_are_small_and_importable() -> None:
    assert sum(p.stat().st_size for p in SAMPLES.iterdir() if p.is_file()) < 200 * 1024
    kinds = {name: inspect_image(SAMPLES / name, deep=True) for name in NAMES}
    assert {n: (i.format, i.subformat) for n, i in kinds.items()} == {
        "tiny-stream.vmdk": ("VMDK", "streamOptimized"),
        "tiny-dynamic.vhd": ("VHD", "dynamic"),
        "tiny.raw": ("RAW", "raw"),
    }
    assert all(i.importable for i in kinds.values())


def test_stream_sample_holds_recognisable_content(qemu_img, tmp_path: Path) -> None:
    out = tmp_path / "back.raw"
    sample = SAMPLES / "tiny-stream.vmdk"
    qemu_img("convert", "-q", "-f", "vmdk", "-O", "raw", str(sample), str(out))
    data = out.read_bytes()
    assert data.startswith(b"manifestkit sample disk")
    assert data[2 * 1024 * 1024 : 2 * 1024 * 1024 + 4096] == bytes(i % 251 for i in range(4096))


def test_make_samples_is_deterministic(qemu_img, tmp_path: Path) -> None:
    runs = []
    for n in (1, 2):
        out = tmp_path / f"run{n}"
        subprocess.run(
            [sys.executable, str(SAMPLES / "make_samples.py"), str(out)],
            check=True,
            capture_output=True,
        )
        runs.append({name: (out / name).read_bytes() for name in NAMES})
    assert runs[0] == runs[1]
    for name in NAMES:
        made = inspect_image(tmp_path / "run1" / name)
        committed = inspect_image(SAMPLES / name)
        assert (made.format, made.subformat, made.capacity_bytes) == (
            committed.format,
            committed.subformat,
            committed.capacity_bytes,
        )
