"""Shared bits for the upload tests: images, running the CLI, reading parts back over HTTP."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from manifestkit.cli import main
from manifestkit.manifest import read_manifest

MiB = 1 << 20


def random_image(path: Path, size: int, *, seed: int = 0) -> Path:
    """Incompressible, non-zero bytes (a RAW image) written in 1 MiB slices."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as out:
        left = size
        while left:
            n = min(left, MiB)
            out.write(rng.randbytes(n))
            left -= n
    return path


def sparse_image(
    path: Path, size: int, data_ranges: list[tuple[int, int]], *, seed: int = 1
) -> Path:
    """A sparse file of ``size`` bytes with random data only in ``data_ranges`` (start, length)."""
    import random

    rng = random.Random(seed)
    with open(path, "wb") as out:
        out.truncate(size)
        for start, length in data_ranges:
            out.seek(start)
            out.write(rng.randbytes(length))
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse refusing an option
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def http(method: str, url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def fetch_manifest(url: str, into: Path) -> Path:
    status, body = http("GET", url)
    assert status == 200, body[:300]
    into.write_bytes(body)
    return into


def assert_parts_match(manifest_path: Path, image: Path) -> int:
    """GET every part through its presigned get-url and compare with the image's bytes."""
    header, parts = read_manifest(str(manifest_path))
    data = image.read_bytes()
    assert header.size == len(data)
    for part in parts:
        status, body = http("GET", part.get_url)
        assert status == 200, (part.index, body[:200])
        assert body == data[part.start : part.end + 1], f"part {part.index} differs"
    return len(parts)


def download_parts(
    manifest_url: str, folder: Path, name: str = "uploaded.vmdk", manifest_name: str = "m.xml"
) -> tuple[Path, list]:
    """The uploaded file put together from its parts' GET URLs (the importer's view) in
    ``folder/name``, and the manifest's parts; the manifest is kept as ``folder/manifest_name``."""
    header, parts = read_manifest(str(fetch_manifest(manifest_url, folder / manifest_name)))
    out = folder / name
    with open(out, "wb") as f:
        for part in parts:
            status, body = http("GET", part.get_url)
            assert status == 200, (part.index, body[:200])
            assert len(body) == part.size
            f.write(body)
    assert out.stat().st_size == header.size
    return out, parts


def assert_same_disk(uploaded: Path, source: Path | str, source_format: str) -> None:
    """``qemu-img compare`` finds the uploaded VMDK's guest data equal to ``source``'s, and
    ``qemu-img check`` finds no error in it."""
    from convert.helpers import qemu

    compare = qemu("compare", "-f", "vmdk", "-F", source_format, str(uploaded), str(source))
    assert compare.returncode == 0, compare.stdout + compare.stderr
    check = qemu("check", str(uploaded))
    assert check.returncode == 0 and "No errors" in check.stdout, check.stdout + check.stderr
