#!/usr/bin/env python3
"""Benchmark ``inspect``: bytes read without --deep, and --deep throughput against qemu-img.

    python bench/bench_inspect.py [--deep-gib 1] [--stream-gib 4] [--keep]

1. A 1 TiB sparse RAW (``truncate``) and a multi-GiB streamOptimized VMDK (qemu-img, data every
   64 MiB) and a 1 TiB streamOptimized VMDK: bytes read counted three ways: by wrapping the file
   object that ``ImageReader`` opens, by ``ImageReader.bytes_read``, and by the kernel
   (``/proc/self/io`` rchar). The promise: at most 1 MiB.
2. ``--deep`` on a 1 GiB streamOptimized VMDK (semi-compressible content), in a child process,
   against ``qemu-img check`` and ``qemu-img convert`` to the null-co driver (which also
   inflates every grain) on the same file in the same run: seconds, MiB/s, ratio, peak RSS of each.
Needs qemu-img. Everything is made in a temporary folder and deleted.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peak_rss import PeakRss, mib_text  # noqa: E402

import manifestkit.images.reader as reader_module  # noqa: E402
from manifestkit.images import inspect_image  # noqa: E402

MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB
LIMIT = MiB


class CountingFile:
    """Wraps the file object ImageReader opens; counts the bytes its reads return."""

    total = 0

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def read(self, n: int = -1) -> bytes:
        data = self._inner.read(n)
        CountingFile.total += len(data or b"")
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def counting_open(*args: Any, **kwargs: Any) -> CountingFile:
    return CountingFile(open(*args, **kwargs))


def rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


def measure_reads(path: Path) -> dict[str, int]:
    CountingFile.total = 0
    reader_module.open = counting_open  # module global shadows the builtin for ImageReader only
    try:
        before = rchar()
        info = inspect_image(path)
        kernel = rchar() - before
    finally:
        del reader_module.open
    return {
        "file_bytes": info.file_bytes,
        "capacity_bytes": info.capacity_bytes,
        "wrapped_file_bytes_read": CountingFile.total,
        "reader_bytes_read": int(info.details["bytes_read"]),
        "kernel_rchar": kernel,
    }


def qemu(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, stdout=subprocess.DEVNULL)


def timed_child(argv: list[str]) -> tuple[float, int | None]:
    """Wall seconds and peak RSS (KiB) of one child process alone (``peak_rss``: wait4's
    ru_maxrss would start at this bench's own RSS)."""
    peak = PeakRss(argv)
    start = time.perf_counter()
    proc = subprocess.Popen(peak.argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    kib = peak.kib()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[:3]} failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return seconds, kib


def semi_compressible_raw(path: Path, size: int) -> None:
    rng = random.Random(2)
    text = b"".join(b"line %08d of a disk image full of text\n" % i for i in range(4096))
    with open(path, "wb") as f:
        for i in range(size // MiB):
            noise = rng.randbytes(256 * 1024)  # a quarter incompressible
            block = (noise + text)[: MiB - 8] + i.to_bytes(8, "little")
            f.write(block)


def report_reads(name: str, figures: dict[str, int]) -> bool:
    worst = max(figures["wrapped_file_bytes_read"], figures["reader_bytes_read"])
    ok = worst <= LIMIT
    print(
        f"{name}: file {figures['file_bytes']:,} B, capacity {figures['capacity_bytes']:,} B; "
        f"read {figures['wrapped_file_bytes_read']:,} B (wrapped file), "
        f"{figures['reader_bytes_read']:,} B (reader), "
        f"{figures['kernel_rchar']:,} B (kernel rchar, "
        f"whole process); {worst / LIMIT:.4f} of the 1 MiB budget -> {'OK' if ok else 'OVER'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deep-gib", type=int, default=1)
    parser.add_argument("--stream-gib", type=int, default=4)
    args = parser.parse_args()
    ok = True
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)

        sparse = work / "one-tib.raw"
        with open(sparse, "wb") as f:
            f.truncate(TiB)
        ok &= report_reads("1 TiB sparse RAW", measure_reads(sparse))

        src = work / "stream-src.raw"
        with open(src, "wb") as f:
            f.truncate(args.stream_gib * GiB)
            for offset in range(0, args.stream_gib * GiB, 64 * MiB):
                f.seek(offset)
                f.write(os.urandom(MiB))
        stream = work / "multi-gib-stream.vmdk"
        qemu(
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            str(src),
            str(stream),
        )
        src.unlink()
        name = f"{args.stream_gib} GiB streamOptimized VMDK"
        ok &= report_reads(name, measure_reads(stream))
        stream.unlink()

        big = work / "one-tib-stream.vmdk"
        qemu("create", "-q", "-f", "vmdk", "-o", "subformat=streamOptimized", str(big), "1T")
        ok &= report_reads("1 TiB streamOptimized VMDK (empty)", measure_reads(big))
        big.unlink()
        sparse.unlink()

        raw = work / "deep-src.raw"
        semi_compressible_raw(raw, args.deep_gib * GiB)
        deep = work / "deep.vmdk"
        qemu(
            "convert",
            "-f",
            "raw",
            "-O",
            "vmdk",
            "-o",
            "subformat=streamOptimized",
            str(raw),
            str(deep),
        )
        raw.unlink()
        file_bytes = deep.stat().st_size
        ours, ours_rss = timed_child(
            [
                sys.executable,
                "-m",
                "manifestkit",
                "inspect",
                "--deep",
                "-q",
                "--output",
                "json",
                str(deep),
            ]
        )
        check, check_rss = timed_child(["qemu-img", "check", "-f", "vmdk", str(deep)])
        full, full_rss = timed_child(
            [
                "qemu-img",
                "convert",
                "-n",
                "-f",
                "vmdk",
                "--target-image-opts",
                str(deep),
                f"driver=null-co,size={args.deep_gib * GiB}",
            ]
        )
        capacity = args.deep_gib * GiB
        print(
            f"--deep on a {args.deep_gib} GiB streamOptimized VMDK "
            f"({file_bytes / MiB:.0f} MiB file):"
        )
        for label, seconds, rss in (
            ("manifestkit inspect --deep", ours, ours_rss),
            ("qemu-img check", check, check_rss),
            ("qemu-img convert to null-co", full, full_rss),
        ):
            print(
                f"  {label:36s} {seconds:7.2f} s  {file_bytes / MiB / seconds:8.1f} MiB/s of file  "
                f"{capacity / MiB / seconds:8.1f} MiB/s of disk  peak RSS {mib_text(rss)}"
            )
        print(f"  ratio inspect --deep / qemu-img check time: {ours / check:.2f}x")
        print(f"  ratio inspect --deep / qemu-img convert time: {ours / full:.2f}x")
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bench process peak RSS (incl. generating data): {own:.1f} MiB")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
