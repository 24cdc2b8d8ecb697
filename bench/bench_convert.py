"""Benchmark: ``manifestkit convert`` vs ``qemu-img convert -O vmdk -o subformat=streamOptimized``.

Makes a RAW image with realistic mixed content (zero runs left as holes, written zero grains,
text-like data, binary-like data with a skewed byte distribution, random data from os.urandom), then
in the same run times both converters on it (alternating, ``--repeat`` runs each, min and median),
prints the speed ratio (goal >= 5x on 2 cores), both output sizes (goal: ours within 2 % of
qemu-img's), peak RSS, the load average at each run, and checks both outputs with
``qemu-img compare``. Then the same for a 2 GiB monolithicSparse VMDK (qemu-img makes it from
another mixed RAW). Temporary files are removed.

    python bench/bench_convert.py [--size-mib 1024] [--sparse-mib 2048] [--workers N] [--levels]
        [--codecs] [--repeat 3]

``--levels`` also prints single-thread deflate speed and size for zlib levels 1..6 on a sample;
``--codecs`` builds an ext4 image of real files (mkfs.ext4 -d over /usr/lib/python3*, ...) and
prints zlib, libdeflate and ISA-L (when installed) speed and size on its grains.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

from peak_rss import PeakRss, mib_text

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


def timed(cmd: list[str]) -> tuple[float, float, float | None]:
    """Run ``cmd``; return (wall seconds, CPU seconds from wait4(2), peak RSS in MiB of that
    process alone: ``peak_rss``, not wait4's ru_maxrss, which starts at this bench's own)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    peak = PeakRss(cmd)
    started = time.perf_counter()
    child = subprocess.Popen(peak.argv, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    kib = peak.kib()
    if child.returncode:
        raise SystemExit(f"{cmd[0]} failed with exit {child.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, None if kib is None else kib / 1024


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


def make_fs_image(path: str) -> bool:
    """An ext4 image of real files (the Python standard library, shared libraries, docs):
    what a disk holds, unlike generated data. False when mkfs.ext4 is missing."""
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/usr/sbin:/sbin")
    if not mkfs:
        return False
    import glob

    root = os.path.join(os.path.dirname(path), "fsroot")
    os.makedirs(root)
    sources = glob.glob("/usr/lib/python3*") + ["/usr/share/doc"]
    sources += glob.glob("/usr/lib/x86_64-linux-gnu/libLLVM*")[:1]
    for src in sources:
        subprocess.run(["cp", "-a", src, root], check=False, stderr=subprocess.DEVNULL)
    used = int(
        subprocess.run(["du", "-sb", root], capture_output=True, text=True).stdout.split()[0]
    )
    with open(path, "wb") as f:
        f.truncate(used * 3 // 2 + 64 * MiB)
    subprocess.run([mkfs, "-q", "-F", "-d", root, path], check=True)
    shutil.rmtree(root)
    return True


def compare_codecs(path: str) -> None:
    """Each deflate library on the non-zero 64 KiB grains of ``path``, one thread, CPU time."""
    with open(path, "rb") as f:
        sample = f.read(512 * MiB)
    zero = bytes(65536)
    grains = [sample[i : i + 65536] for i in range(0, len(sample) - 65535, 65536)]
    grains = [g for g in grains if g != zero]
    raw = len(grains) * 65536
    codecs: list[tuple[str, object, object]] = []
    for level in (6, 5):
        codecs.append((f"zlib {level}", lambda g, lv=level: zlib.compress(g, lv), zlib.decompress))
    try:
        import deflate

        for level in (1, 3, 4, 5, 6):
            codecs.append(
                (
                    f"libdeflate {level}",
                    lambda g, lv=level: deflate.zlib_compress(g, lv),
                    lambda c: deflate.zlib_decompress(c, 65536),
                )
            )
    except ImportError:
        print("  (libdeflate not installed: pip install deflate)")
    try:
        from isal import isal_zlib

        for level in (1, 2, 3):
            codecs.append(
                (
                    f"isal {level}",
                    lambda g, lv=level: isal_zlib.compress(g, lv),
                    isal_zlib.decompress,
                )
            )
    except ImportError:
        print("  (ISA-L not installed: pip install isal)")
    print(f"deflate libraries on {raw // MiB} MiB of non-zero grains of a filesystem image:")
    base = None
    for name, comp, dec in codecs:
        t = time.process_time()
        packed = [comp(g) for g in grains]
        c_s = time.process_time() - t
        t = time.process_time()
        for p in packed:
            dec(p)
        d_s = time.process_time() - t
        size = sum(len(p) for p in packed)
        base = base or size
        print(
            f"  {name:13s} {size / raw:.4f} of raw ({size / base:.4f} x zlib 6)  "
            f"deflate {raw / MiB / c_s:6.1f} MiB/s  inflate {raw / MiB / d_s:6.1f} MiB/s"
        )


def compare_tools(qemu: str, src: str, src_fmt: str, label: str, folder: str, args) -> None:
    """Alternating runs of qemu-img and manifestkit converting ``src`` to streamOptimized."""
    subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    theirs = os.path.join(folder, "qemu.vmdk")
    ours = os.path.join(folder, "ours.vmdk")
    qemu_cmd = [qemu, "convert", "-f", src_fmt, "-O", "vmdk", "-o", "subformat=streamOptimized"]
    workers = ["--workers", str(args.workers)] if args.workers else []
    our_cmd = [sys.executable, "-m", "manifestkit", "convert", "-q", "--force", *workers]
    runs: dict[str, list[tuple[float, float, float | None]]] = {"qemu": [], "ours": []}
    loads = []
    # alternate the two: the machine is shared
    for _ in range(args.repeat):
        for path in (theirs, ours):
            if os.path.exists(path):
                os.unlink(path)
        loads.append(os.getloadavg()[0])
        runs["qemu"].append(timed([*qemu_cmd, src, theirs]))
        loads.append(os.getloadavg()[0])
        runs["ours"].append(timed([*our_cmd, src, ours]))
    q_bytes, o_bytes = os.path.getsize(theirs), os.path.getsize(ours)
    print(
        f"[{label}] cpus: {os.cpu_count()}, 1-min load average at each run: "
        + ", ".join(f"{x:.2f}" for x in loads)
    )
    for name, results in runs.items():
        walls = ", ".join(f"{r[0]:.2f}" for r in results)
        print(f"  {name} wall seconds per run: {walls}")
    med = {k: statistics.median(r[0] for r in v) for k, v in runs.items()}
    best = {k: min(v, key=lambda r: r[0]) for k, v in runs.items()}
    for name, key, size in (
        ("qemu-img convert", "qemu", q_bytes),
        ("manifestkit", "ours", o_bytes),
    ):
        s_, cpu, _ = best[key]
        peaks = [r[2] for r in runs[key] if r[2] is not None]
        rss = mib_text(int(max(peaks) * 1024) if peaks else None)
        print(
            f"  {name:17s}: min {s_:6.2f} s median {med[key]:6.2f} s wall, {cpu:6.2f} s CPU "
            f"(fastest run), peak RSS {rss} (highest of the runs), {size:>13,} bytes"
        )
    print(
        f"  speed ratio (qemu-img wall / ours): min-to-min "
        f"{best['qemu'][0] / best['ours'][0]:.2f}x, "
        f"median {med['qemu'] / med['ours']:.2f}x  (goal >= 5x)"
    )
    print(f"  CPU-time ratio (qemu-img / ours): {best['qemu'][1] / best['ours'][1]:.2f}x")
    print(f"  size ratio (ours / qemu-img): {o_bytes / q_bytes:.4f}   (goal <= 1.02)")
    for name, out in (("qemu-img", theirs), ("manifestkit", ours)):
        result = subprocess.run(
            [qemu, "compare", "-f", src_fmt, "-F", "vmdk", src, out],
            capture_output=True,
            text=True,
        )
        print(
            f"  qemu-img compare source {name}: {result.stdout.strip()} (exit {result.returncode})"
        )
    os.unlink(theirs)
    os.unlink(ours)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument(
        "--sparse-mib", type=int, default=2048, help="monolithicSparse source; 0: skip"
    )
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--levels", action="store_true")
    parser.add_argument("--codecs", action="store_true", help="deflate libraries on an ext4 image")
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs of each tool")
    args = parser.parse_args()
    qemu = shutil.which("qemu-img")
    if not qemu:
        print("qemu-img is not installed", file=sys.stderr)
        return 2
    from manifestkit import compression

    print(f"manifestkit deflate backend: {compression.BACKEND} level {compression.DEFAULT_LEVEL}")
    folder = tempfile.mkdtemp(prefix="bench-convert-", dir=os.environ.get("BENCH_DIR"))
    try:
        if args.codecs:
            fs = os.path.join(folder, "fs.img")
            if make_fs_image(fs):
                compare_codecs(fs)
                os.unlink(fs)
            else:
                print("mkfs.ext4 not found: no filesystem image for --codecs")
        raw = os.path.join(folder, "mixed.raw")
        t = time.perf_counter()
        mix = make_image(raw, args.size_mib * MiB)
        print(
            f"image: {args.size_mib} MiB RAW in {time.perf_counter() - t:.1f} s; mix (MiB): "
            + ", ".join(f"{k} {v // MiB}" for k, v in mix.items())
        )
        if args.levels:
            compare_levels(raw)
        compare_tools(qemu, raw, "raw", f"{args.size_mib} MiB mixed RAW", folder, args)
        os.unlink(raw)
        if args.sparse_mib:
            raw = os.path.join(folder, "sparse-src.raw")
            make_image(raw, args.sparse_mib * MiB, seed=7)
            sparse = os.path.join(folder, "mono.vmdk")
            subprocess.run(
                [
                    qemu,
                    "convert",
                    "-f",
                    "raw",
                    "-O",
                    "vmdk",
                    "-o",
                    "subformat=monolithicSparse",
                    raw,
                    sparse,
                ],
                check=True,
            )
            os.unlink(raw)
            compare_tools(
                qemu, sparse, "vmdk", f"{args.sparse_mib} MiB monolithicSparse VMDK", folder, args
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
