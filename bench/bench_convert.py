"""Benchmark: ``manifestkit convert`` vs ``qemu-img convert -O vmdk -o subformat=streamOptimized``.

Makes a RAW image with realistic mixed content (zero runs left as holes, written zero grains,
text-like data, binary-like data with a skewed byte distribution, random data from os.urandom), then
in the same run times both converters on it, prints the speed ratio (goal >= 1.5x on 2 cores),
both output sizes (goal: ours within 2 % of qemu-img's), our peak RSS, and checks both outputs with
``qemu-img compare``. Temporary files are removed.

    python bench/bench_convert.py [--size-mib 1024] [--workers N] [--levels]

``--levels`` also prints single-thread deflate speed and size for zlib levels 1..6 on a sample.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MiB = 1024 * 1024
REGION = 4 * MiB
WORDS = (
    b"the of and to in is for on that with kernel module usr lib share bin etc var log init "
    b"systemd service config 0x7f3a2c error warning info debug user root home network eth0 "
    b'127.0.0.1 GET POST HTTP/1.1 200 404 json xml <div class="item"> </div> return if else '
    b"def class import from self None True False int char void static const struct"
).split()


def _text_pool(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        line = b" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14)))
        out += line + (b"\n" if rng.random() < 0.9 else b"\r\n\t")
    return bytes(out[:size])


def _binary_like(size: int, table: bytes) -> bytes:
    # random bytes squeezed into a skewed alphabet: Huffman-compressible, few long matches,
    # roughly like executables and libraries
    return os.urandom(size).translate(table)


def make_image(path: str, size: int, seed: int = 2026) -> dict[str, int]:
    rng = random.Random(seed)
    pool = _text_pool(rng, 6 * MiB)
    skew = bytes((i * i) % 61 if i % 3 else i % 7 for i in range(256))
    mix = {"hole": 0, "zeros": 0, "text": 0, "binary": 0, "random": 0}
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in range(0, size, REGION):
            length = min(REGION, size - offset)
            kind = rng.choices(list(mix), weights=[22, 5, 30, 18, 25])[0]
            mix[kind] += length
            if kind == "hole":
                continue
            f.seek(offset)
            if kind == "zeros":
                f.write(bytes(length))
            elif kind == "text":
                start = rng.randrange(0, len(pool) - length)
                f.write(pool[start : start + length])
            elif kind == "binary":
                f.write(_binary_like(length, skew))
            else:
                f.write(os.urandom(length))
    return mix


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """Run ``cmd``; return (wall seconds, CPU seconds, peak RSS in MiB) of that process alone,
    from wait4(2)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{cmd[0]} failed with exit {child.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def compare_levels(path: str) -> None:
    with open(path, "rb") as f:
        sample = f.read(256 * MiB)
    grains = [sample[i : i + 65536] for i in range(0, len(sample), 65536)]
    grains = [g for g in grains if g.count(0) != len(g)]
    print(f"zlib levels on {len(grains) * 64 // 1024} MiB of non-zero grains (one thread):")
    base = None
    for level in range(1, 7):
        t = time.perf_counter()
        total = sum(len(zlib.compress(g, level)) for g in grains)
        seconds = time.perf_counter() - t
        base = base or total
        size = f"{total / MiB:8.1f} MiB  ({total / base:.4f} x level 1)"
        print(f"  level {level}: {seconds:6.2f} s  {size}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--levels", action="store_true")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each tool (best is used)")
    args = parser.parse_args()
    qemu = shutil.which("qemu-img")
    if not qemu:
        print("qemu-img is not installed", file=sys.stderr)
        return 2
    folder = tempfile.mkdtemp(prefix="bench-convert-", dir=os.environ.get("BENCH_DIR"))
    try:
        raw = os.path.join(folder, "mixed.raw")
        t = time.perf_counter()
        mix = make_image(raw, args.size_mib * MiB)
        print(
            f"image: {args.size_mib} MiB RAW in {time.perf_counter() - t:.1f} s; mix (MiB): "
            + ", ".join(f"{k} {v // MiB}" for k, v in mix.items())
        )
        if args.levels:
            compare_levels(raw)
        # warm the page cache the same way for both
        subprocess.run(["cat", raw], stdout=subprocess.DEVNULL, check=True)

        load = os.getloadavg()[0]
        theirs = os.path.join(folder, "qemu.vmdk")
        ours = os.path.join(folder, "ours.vmdk")
        qemu_cmd = [qemu, "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized"]
        workers = ["--workers", str(args.workers)] if args.workers else []
        our_cmd = [sys.executable, "-m", "manifestkit", "convert", "-q", "--force", *workers]
        runs: dict[str, list[tuple[float, float, float]]] = {"qemu": [], "ours": []}
        # alternate the two, best wall time of --repeat runs each: the machine is shared
        for _ in range(args.repeat):
            for path in (theirs, ours):
                if os.path.exists(path):
                    os.unlink(path)
            runs["qemu"].append(timed([*qemu_cmd, raw, theirs]))
            runs["ours"].append(timed([*our_cmd, raw, ours]))
        qemu_s, qemu_cpu, qemu_rss = min(runs["qemu"])
        ours_s, ours_cpu, ours_rss = min(runs["ours"])

        q_bytes, o_bytes = os.path.getsize(theirs), os.path.getsize(ours)
        print(f"cpus: {os.cpu_count()}, 1-min load average before the runs: {load:.2f}")
        for name, results in runs.items():
            walls = ", ".join(f"{r[0]:.2f}" for r in results)
            print(f"  {name} wall seconds per run: {walls}")
        print(
            f"qemu-img convert : {qemu_s:7.2f} s wall {qemu_cpu:7.2f} s CPU  {q_bytes:>13,} bytes"
        )
        print(
            f"manifestkit      : {ours_s:7.2f} s wall {ours_cpu:7.2f} s CPU  {o_bytes:>13,} bytes"
        )
        print(
            f"speed ratio (qemu-img wall / ours, best runs): {qemu_s / ours_s:.2f}x  (goal >= 1.5x)"
        )
        print(f"CPU-time ratio (qemu-img / ours): {qemu_cpu / ours_cpu:.2f}x")
        print(f"size ratio (ours / qemu-img): {o_bytes / q_bytes:.4f}   (goal <= 1.02)")
        print(f"peak RSS: manifestkit convert {ours_rss:.1f} MiB, qemu-img {qemu_rss:.1f} MiB")
        for name, out in (("qemu-img", theirs), ("manifestkit", ours)):
            result = subprocess.run(
                [qemu, "compare", "-f", "raw", "-F", "vmdk", raw, out],
                capture_output=True,
                text=True,
            )
            print(
                f"qemu-img compare RAW {name}: {result.stdout.strip()} (exit {result.returncode})"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
