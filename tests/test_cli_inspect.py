"""``manifestkit inspect`` end to end through ``manifestkit.cli.main``: output and every bad input.

Each bad input must give exit 2 and exactly one stderr line ``manifestkit: error: <file>: ...``, no
traceback, and never hang (an alarm turns a hang into a failure).
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import signal
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from manifestkit.cli import main

SAMPLES = Path(__file__).resolve().parents[1] / "samples"
STREAM = SAMPLES / "tiny-stream.vmdk"
VHD = SAMPLES / "tiny-dynamic.vhd"
RAW = SAMPLES / "tiny.raw"


@pytest.fixture(autouse=True)
def no_hang() -> Iterator[None]:
    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("manifestkit inspect hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["inspect", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(result: tuple[int, str, str], path: Path | str, words: str) -> None:
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"manifestkit: error: {path}: "), lines[0]
    assert words.lower() in lines[0].lower(), lines[0]
    assert "Traceback" not in err and out == ""


def patched(tmp_path: Path, source: Path, name: str, edits: dict[int, bytes]) -> Path:
    data = bytearray(source.read_bytes())
    for offset, value in edits.items():
        data[offset : offset + len(value)] = value
    path = tmp_path / name
    path.write_bytes(bytes(data))
    return path


# --- output -------------------------------------------------------------------------------------


def test_json_document(capsys) -> None:
    code, out, err = run(capsys, str(STREAM), "--output", "json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    for key in (
        "path",
        "format",
        "subformat",
        "file_bytes",
        "capacity_bytes",
        "volume_gib",
        "part_size",
        "parts",
        "importable",
        "problems",
    ):
        assert key in doc
    assert (doc["format"], doc["subformat"], doc["importable"]) == ("VMDK", "streamOptimized", True)
    assert doc["file_bytes"] == STREAM.stat().st_size
    assert doc["part_size"] == 10 * 1024 * 1024 and doc["parts"] == 1
    assert doc["volume_gib"] == 1 and doc["problems"] == []


def test_capacity_matches_qemu_img(capsys) -> None:
    if not shutil.which("qemu-img"):
        pytest.skip("qemu-img not installed")
    for sample, fmt in ((STREAM, "vmdk"), (VHD, "vpc"), (RAW, "raw")):
        oracle = json.loads(
            subprocess.run(
                ["qemu-img", "info", "--output=json", "-f", fmt, str(sample)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        code, out, _ = run(capsys, str(sample), "--output", "json")
        assert code == 0
        assert json.loads(out)["capacity_bytes"] == oracle["virtual-size"]


@pytest.mark.parametrize(
    ("size", "part_size"),
    [("10MiB", 10485760), ("10M", 10485760), ("10485760", 10485760), ("1K", 1024), ("1000", 1000)],
)
def test_part_size(capsys, size: str, part_size: int) -> None:
    code, out, _ = run(capsys, str(STREAM), "--part-size", size, "--output", "json")
    doc = json.loads(out)
    assert code == 0 and doc["part_size"] == part_size
    assert doc["parts"] == -(-STREAM.stat().st_size // part_size)


def test_bad_part_size(capsys) -> None:
    code, out, err = run(capsys, str(STREAM), "--part-size", "ten")
    assert code == 2 and "invalid size" in err and len(err.strip().splitlines()) == 1


def test_text_output_and_deep(capsys) -> None:
    code, out, err = run(capsys, str(STREAM), "--deep")
    assert code == 0, err
    assert "VMDK (streamOptimized)" in out and "importable   yes" in out
    assert "deep check   ok: 2 grains" in out
    # --deep on another format says it checked nothing, rather than staying silent
    code, out, err = run(capsys, str(VHD), "--deep")
    assert code == 0 and "deep check   skipped: only streamOptimized VMDK grains" in out


def test_not_importable_still_exits_0(capsys, tmp_path: Path) -> None:
    desc = tmp_path / "flat.vmdk"
    desc.write_text(
        '# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\n'
        'RW 2048 FLAT "flat-flat.vmdk" 0\n'
    )
    code, out, _ = run(capsys, str(desc), "--output", "json")
    doc = json.loads(out)
    assert code == 0 and doc["importable"] is False
    assert doc["capacity_bytes"] == 2048 * 512
    assert any(f"manifestkit convert {desc} OUT.vmdk" in p for p in doc["problems"])


def test_extension_that_lies_warns_on_one_line(capsys, tmp_path: Path) -> None:
    path = tmp_path / "disk.vhd"
    shutil.copy(STREAM, path)
    code, out, err = run(capsys, str(path))
    assert code == 0 and "VMDK (streamOptimized)" in out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"manifestkit: warning: {path}: ")
    assert "says VHD" in lines[0]


def test_format_option_disagreeing_is_a_problem(capsys) -> None:
    code, out, _ = run(capsys, str(VHD), "--format", "VMDK", "--output", "json")
    doc = json.loads(out)
    assert code == 0 and not doc["importable"]
    assert any("--format VMDK" in p for p in doc["problems"])


def test_debug_shows_traceback(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, str(tmp_path / "nope.vmdk"), "--debug")
    assert code == 2 and "Traceback" in err


# --- bad input ----------------------------------------------------------------------------------


def test_missing_file(capsys, tmp_path: Path) -> None:
    path = tmp_path / "nope.vmdk"
    assert_one_error(run(capsys, str(path)), path, "no such file")


def test_directory(capsys, tmp_path: Path) -> None:
    assert_one_error(run(capsys, str(tmp_path)), tmp_path, "directory")


def test_fifo_does_not_hang(capsys, tmp_path: Path) -> None:
    path = tmp_path / "pipe.vmdk"
    os.mkfifo(path)
    assert_one_error(run(capsys, str(path)), path, "FIFO")


def test_unreadable_file_open_refused(capsys, tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "secret.vmdk"
    shutil.copy(STREAM, path)
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        if os.fspath(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    assert_one_error(run(capsys, str(path)), path, "permission denied")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads mode-000 files; the variant above covers")
def test_unreadable_file_chmod(capsys, tmp_path: Path) -> None:
    path = tmp_path / "secret.vmdk"
    shutil.copy(STREAM, path)
    path.chmod(0)
    assert_one_error(run(capsys, str(path)), path, "permission denied")


@pytest.mark.parametrize(
    ("name", "content", "words"),
    [
        ("empty.vmdk", lambda: b"", "empty"),
        ("short.vmdk", lambda: STREAM.read_bytes()[:100], "truncated"),
        ("garbage.vmdk", lambda: b"# Disk DescriptorFile\nthis is not a descriptor\n", "line 2"),
        (
            "huge.vmdk",
            lambda: b"# Disk DescriptorFile\n" + b'ddb.comment = "x"\n' * 200_000,
            "descriptor",
        ),
        ("disk.vmdk", lambda: b"QFI\xfb\0\0\0\x03".ljust(4096, b"\0"), "qcow2"),
    ],
    ids=[
        "zero-length",
        "truncated-header",
        "garbage-descriptor-file",
        "huge-descriptor-file",
        "qcow2-not-supported",
    ],
)
def test_file_of_these_bytes_is_one_error(
    capsys, tmp_path: Path, name: str, content: Callable[[], bytes], words: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content())
    assert_one_error(run(capsys, str(path)), path, words)


@pytest.mark.parametrize("cut", [0x3402, 0x3600 + 100, 0x5000])
def test_truncated_grain_directory(capsys, tmp_path: Path, cut: int) -> None:
    # the sample's grain directory is at sector 26 (0x3400), its grain table at sector 27
    path = tmp_path / "cut.vmdk"
    path.write_bytes(STREAM.read_bytes()[:cut])
    code, _, err = run(capsys, str(path))
    assert_one_error((code, "", err), path, "")
    assert "outside" in err or "past" in err or "truncated" in err


def test_truncated_stream_found_by_deep(capsys, tmp_path: Path) -> None:
    path = tmp_path / "cut.vmdk"
    path.write_bytes(STREAM.read_bytes()[: 0x10000 + 100])  # inside the first grain
    # the grain tables point past the end: found without --deep too (issue 11 item 2)
    assert_one_error(run(capsys, str(path)), path, "truncated")
    assert_one_error(run(capsys, str(path), "--deep"), path, "truncated")


@pytest.mark.parametrize("cut", [100, 512, 1000])
def test_truncated_vhd_footer(capsys, tmp_path: Path, cut: int) -> None:
    path = tmp_path / "cut.vhd"
    path.write_bytes(VHD.read_bytes()[:-cut])
    assert_one_error(run(capsys, str(path)), path, "truncated")


@pytest.mark.parametrize(
    ("offset", "value", "words"),
    [
        (4, struct.pack("<I", 4), "version 4"),
        (4, struct.pack("<I", 0), "version 0"),
        (20, struct.pack("<Q", 0), "grainSize 0"),
        (20, struct.pack("<Q", 100), "not a power of two"),
        (12, struct.pack("<Q", 0), "capacity is 0"),
        (12, struct.pack("<Q", 1 << 50), "absurd"),
        (56, struct.pack("<Q", 10**7), "gdOffset"),
        (28, struct.pack("<Q", 10**7), "descriptor"),
        (36, struct.pack("<Q", 10**7), "descriptorSize"),
        (77, struct.pack("<H", 9), "compressAlgorithm 9"),
        (73, b"\n \n\n", "newline"),
        (8, struct.pack("<I", 0x80030003), "incompatible"),
    ],
)
def test_header_field_nonsense(
    capsys, tmp_path: Path, offset: int, value: bytes, words: str
) -> None:
    path = patched(tmp_path, STREAM, "bad.vmdk", {offset: value})
    assert_one_error(run(capsys, str(path)), path, words)


def test_bad_magic_with_format_vmdk(capsys, tmp_path: Path) -> None:
    path = patched(tmp_path, STREAM, "bad.vmdk", {0: b"KDMW"})
    assert_one_error(run(capsys, str(path), "--format", "VMDK"), path, "magic")
    # without --format the content decides: no signature is RAW, and the name gets a warning
    code, out, err = run(capsys, str(path))
    assert code == 0 and "RAW" in out and "name says VMDK" in err


def test_bad_vhd_checksum(capsys, tmp_path: Path) -> None:
    size = VHD.stat().st_size
    # same damage in both copies, so only the checksum can tell
    path = patched(tmp_path, VHD, "bad.vhd", {48: b"\x7f", size - 512 + 48: b"\x7f"})
    assert_one_error(run(capsys, str(path)), path, "checksum")


def test_vhd_head_tail_mismatch(capsys, tmp_path: Path) -> None:
    head = bytearray(VHD.read_bytes()[:512])
    head[24:28] = b"\0\0\0\x01"  # another timestamp, with a checksum that is right for it
    struct.pack_into(">I", head, 64, ~(sum(head) - sum(head[64:68])) & 0xFFFFFFFF)
    path = patched(tmp_path, VHD, "mismatch.vhd", {0: bytes(head)})
    # readable, only AWS refuses it: a problem whose fix (manifestkit convert) really works
    code, out, err = run(capsys, str(path), "--output", "json")
    doc = json.loads(out)
    assert code == 0 and err == "" and doc["importable"] is False
    (problem,) = doc["problems"]
    assert "Footers not identical" in problem and f"manifestkit convert {path}" in problem
    converted = tmp_path / "converted.vmdk"
    assert main(["convert", "-q", str(path), str(converted)]) == 0
    capsys.readouterr()
    if shutil.which("qemu-img"):  # the oracle: same guest data as the undamaged sample
        same = subprocess.run(["qemu-img", "compare", str(VHD), str(converted)])
        assert same.returncode == 0


def test_vhd_bad_dynamic_header(capsys, tmp_path: Path) -> None:
    path = patched(tmp_path, VHD, "dyn.vhd", {512 + 40: b"\x01"})
    assert_one_error(run(capsys, str(path)), path, "dynamic header checksum")


def test_garbage_embedded_descriptor(capsys, tmp_path: Path) -> None:
    path = patched(tmp_path, STREAM, "garbage.vmdk", {512: b"\x01\x02garbage\xff\xfe"})
    assert_one_error(run(capsys, str(path)), path, "descriptor")


def test_deep_corrupt_grain(capsys, tmp_path: Path) -> None:
    data = STREAM.read_bytes()
    at = 0x10000 + 40  # inside the first grain's deflate data
    flipped = bytes(b ^ 0xFF for b in data[at : at + 20])
    path = patched(tmp_path, STREAM, "corrupt.vmdk", {at: flipped})
    assert run(capsys, str(path))[0] == 0
    assert_one_error(run(capsys, str(path), "--deep"), path, "grain")


def test_file_name_starting_with_a_dash(capsys, tmp_path: Path, monkeypatch) -> None:
    """argparse takes '-disk.vmdk' for an option; the error says how to pass it."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(STREAM, tmp_path / "-disk.vmdk")
    code, _, err = run(capsys, "-disk.vmdk")
    assert code == 2 and err.count("\n") == 1
    assert "manifestkit inspect -- -disk.vmdk" in err
    code, out, err = run(capsys, "--", "-disk.vmdk")
    assert code == 0 and "VMDK (streamOptimized)" in out


def test_common_options_before_the_command(capsys) -> None:
    """'manifestkit --output json inspect X' (as with aws/git) works as after the command does;
    given both places, the one after the command wins."""
    code = main(["--output", "json", "-q", "inspect", str(STREAM)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["format"] == "VMDK"
    assert main(["--output", "json", "inspect", str(STREAM), "--output", "text"]) == 0
    assert capsys.readouterr().out.startswith(f"{STREAM}\n")
    assert main(["inspect", str(STREAM)]) == 0  # the defaults still apply
    assert capsys.readouterr().out.startswith(f"{STREAM}\n")
