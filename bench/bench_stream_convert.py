"""``upload --convert`` streamed (issue 13) vs convert-then-upload, on the sandbox S3.

    python bench/bench_stream_convert.py [--runs 3] [--small-mib 1024] [--large-mib 4096]
                                         [--disk-mib 2048] [--skip-large] [--skip-disk]

Images: SMALL and LARGE, a third random, a third text and a third zeros (interleaved 3 MiB
regions), each as a monolithicSparse VMDK made by qemu-img: not importable as it is, so
``upload --convert`` really converts (a RAW image is importable and would be uploaded as it is,
which measured a plain upload as the "streamed" one). The streamed run's bytes in the bucket are
checked against the converted file's size, so that mistake cannot come back unnoticed; peak RSS
is compared between the two sizes of the same format. For each, ``--runs``
alternating rounds of three commands, each in its own subprocess:

1. ``manifestkit convert SRC OUT.vmdk``            (convert alone)
2. ``manifestkit upload OUT.vmdk``                 (upload of the converted file alone)
3. ``manifestkit upload SRC --convert``            (streamed: convert while uploading)

Before issue 13, ``upload --convert`` ran 1 then 2, so "today" is their sum; the goal is
streamed <= 1.15 x max(1, 2). Printed: min and median wall time of each, the ratios, peak RSS
(VmHWM of the uploading process), bytes that process wrote to local storage
(``/proc/self/io`` write_bytes) and whether anything appeared under its TMPDIR (an empty folder).
Then, as root with losetup: a loop device over a sparse ``--disk-mib`` file uploaded with
``upload --convert /dev/loopN``, downloaded through the manifest's GET URLs and compared with
``qemu-img compare`` against the device. The load average is printed with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
MiB = 1 << 20
REGION = 3 * MiB
BUCKET = "bench-stream"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def make_mixed(path: str, size: int, seed: int = 13) -> None:
    """A third random, a third text, a third written zeros, in 3 MiB regions taking turns."""
    rng = random.Random(seed)
    words = (
        b"the of and to in is for on that kernel module usr lib share bin etc var log init "
        b"systemd service config error warning info debug user root home network eth0 json"
    ).split()
    text = bytearray()
    while len(text) < 8 * MiB:
        text += b" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + b"\n"
    with open(path, "wb") as out:
        for index, offset in enumerate(range(0, size, REGION)):
            length = min(REGION, size - offset)
            kind = index % 3
            if kind == 0:
                out.write(rng.randbytes(length))
            elif kind == 1:
                start = rng.randrange(0, len(text) - length)
                out.write(text[start : start + length])
            else:
                out.write(bytes(length))


def _child(result_file: str, argv: list[str]) -> None:
    """In the measured subprocess: run the CLI, then record peak RSS and local bytes written."""
    from manifestkit.cli import main

    started = time.perf_counter()
    code = main(argv)
    seconds = time.perf_counter() - started
    with open("/proc/self/status") as status:
        hwm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open("/proc/self/io") as io:
        written = next(int(line.split()[1]) for line in io if line.startswith("write_bytes:"))
    with open(result_file, "w") as out:
        json.dump(
            {"code": code, "seconds": seconds, "rss_mib": hwm_kib / 1024, "written": written}, out
        )


def _run(argv: list[str], tmp: str, env: dict[str, str]) -> dict:
    result_file = os.path.join(tmp, "result.json")
    empty_tmp = tempfile.mkdtemp(dir=tmp, prefix="tmpdir-")
    child_env = dict(env, TMPDIR=empty_tmp)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, __file__, "--child", result_file, "--", *argv],
        env=child_env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    with open(result_file) as src:
        result = json.load(src)
    if result["code"]:
        raise SystemExit(f"{' '.join(argv)} exited {result['code']}: {done.stderr[-2000:]}")
    result["wall"] = wall
    result["tmp_files"] = sum(len(files) for _, _, files in os.walk(empty_tmp))
    result["stdout"] = done.stdout
    shutil.rmtree(empty_tmp)
    return result


def _empty_bucket(s3) -> int:
    """Delete everything in the bucket; the bytes of the part objects that were there."""
    stored = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        objects = page.get("Contents", [])
        stored += sum(o["Size"] for o in objects if ".part" in o["Key"])
        keys = [{"Key": o["Key"]} for o in objects]
        if keys:
            s3.delete_objects(Bucket=BUCKET, Delete={"Objects": keys})
    return stored


def _bench_image(label: str, src: str, runs: int, tmp: str, aws: list[str], env, s3) -> dict:
    out = os.path.join(tmp, "converted.vmdk")
    states = os.path.join(tmp, "states")
    times: dict[str, list[float]] = {"convert": [], "upload": [], "stream": []}
    rss: dict[str, float] = {}
    written: dict[str, int] = {}
    tmp_files = 0
    for _ in range(runs):
        for mode in ("convert", "upload", "stream"):
            if mode == "convert":
                argv = ["convert", src, out, "--force", "-q"]
            elif mode == "upload":
                argv = ["upload", out, "--bucket", BUCKET, "-q", "--state-dir", states, *aws]
            else:
                argv = [
                    "upload", src, "--convert", "--bucket", BUCKET, "-q", "--state-dir", states,
                    *aws,
                ]  # fmt: skip
            result = _run(argv, tmp, env)
            shutil.rmtree(states, ignore_errors=True)
            stored = _empty_bucket(s3)
            if mode == "stream" and abs(stored - os.path.getsize(out)) > 64 * 1024:
                raise SystemExit(
                    f"the streamed upload stored {stored} bytes of parts, the converted file is "
                    f"{os.path.getsize(out)}: it did not convert (is {src} importable as it is?)"
                )
            times[mode].append(result["seconds"])
            rss[mode] = max(rss.get(mode, 0.0), result["rss_mib"])
            written[mode] = max(written.get(mode, 0), result["written"])
            if mode == "stream":
                tmp_files += result["tmp_files"]
    size = os.path.getsize(src)
    print(f"\n{label}: {src} ({size / MiB:.0f} MiB file), {runs} alternating runs, load {_load()}")
    for mode, values in times.items():
        print(
            f"  {mode:8s} min {min(values):7.2f} s  median {statistics.median(values):7.2f} s  "
            f"peak RSS {rss[mode]:6.1f} MiB  local bytes written {written[mode]}"
        )
    slower = max(min(times["convert"]), min(times["upload"]))
    today = min(times["convert"]) + min(times["upload"])
    stream = min(times["stream"])
    print(
        f"  streamed / max(convert, upload) = {stream / slower:.2f} (goal <= 1.15); "
        f"today's convert + upload = {today:.2f} s vs streamed {stream:.2f} s "
        f"({today / stream:.2f}x faster); files under TMPDIR during streamed runs: {tmp_files}"
    )
    return {"stream_rss": rss["stream"], "stream_written": written["stream"]}


def _whole_disk(mib: int, tmp: str, aws: list[str], env) -> None:
    if shutil.which("losetup") is None or os.geteuid() != 0:
        print("\nwhole disk: skipped (losetup is unavailable: not installed or not root)")
        return
    backing = os.path.join(tmp, "whole-disk.img")
    rng = random.Random(5)
    with open(backing, "wb") as f:
        f.truncate(mib * MiB)
        for spot in range(0, mib * MiB, 256 * MiB):  # some data in every 256 MiB
            f.seek(spot + 7 * 4096)
            f.write(rng.randbytes(3 * MiB))
    device = subprocess.run(
        ["losetup", "-f", "--show", backing], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        states = os.path.join(tmp, "states")
        argv = ["upload", device, "--convert", "--bucket", BUCKET, "-q", "--state-dir", states]
        result = _run([*argv, *aws], tmp, env)
        url = result["stdout"].strip().splitlines()[-1]
        from manifestkit.manifest import read_manifest

        manifest = os.path.join(tmp, "m.xml")
        with urllib.request.urlopen(url, timeout=60) as answer, open(manifest, "wb") as out:
            out.write(answer.read())
        _, parts = read_manifest(manifest)
        fetched = os.path.join(tmp, "fetched.vmdk")
        with open(fetched, "wb") as out:
            for part in parts:
                with urllib.request.urlopen(part.get_url, timeout=60) as answer:
                    shutil.copyfileobj(answer, out)
        compare = subprocess.run(
            ["qemu-img", "compare", "-f", "vmdk", "-F", "raw", fetched, device],
            capture_output=True,
            text=True,
            check=False,
        )
        print(
            f"\nwhole disk: {device} over a sparse {mib} MiB file: streamed upload "
            f"{result['seconds']:.2f} s, peak RSS {result['rss_mib']:.1f} MiB, "
            f"{os.path.getsize(fetched)} bytes uploaded, local bytes written "
            f"{result['written']}; qemu-img compare after download: "
            f"{'identical' if compare.returncode == 0 else 'DIFFERENT ' + compare.stdout}"
            f" (load {_load()})"
        )
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--small-mib", type=int, default=1024)
    parser.add_argument("--large-mib", type=int, default=4096)
    parser.add_argument("--disk-mib", type=int, default=2048)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--skip-disk", action="store_true")
    parser.add_argument("--workdir", default=None, help="where the images are made")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.rest)
        return
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        PYTHONPATH=ROOT,
    )
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    import boto3
    from botocore.config import Config

    from manifestkit.sandbox import Sandbox

    print(f"{os.cpu_count()} CPUs, load {_load()}")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp, Sandbox() as sandbox:
        endpoint = sandbox.s3_endpoint_url
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        s3.create_bucket(Bucket=BUCKET)
        aws = ["--region", "us-east-1", "--s3-endpoint-url", endpoint]

        def mixed_vmdk(name: str, mib: int) -> str:
            raw, vmdk = os.path.join(tmp, name + ".raw"), os.path.join(tmp, name + ".vmdk")
            make_mixed(raw, mib * MiB)
            subprocess.run(
                ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", raw, vmdk], check=True
            )
            os.unlink(raw)
            return vmdk

        small = mixed_vmdk("small", args.small_mib)
        first = _bench_image(
            f"SMALL {args.small_mib} MiB mixed monolithicSparse VMDK", small, args.runs, tmp, aws,
            env, s3,
        )  # fmt: skip
        os.unlink(small)
        if not args.skip_large:
            large = mixed_vmdk("large", args.large_mib)
            second = _bench_image(
                f"LARGE {args.large_mib} MiB mixed monolithicSparse VMDK", large, args.runs, tmp,
                aws, env, s3,
            )  # fmt: skip
            os.unlink(large)
            print(
                f"\npeak RSS of the streamed upload, same format and mix: "
                f"{first['stream_rss']:.1f} MiB ({args.small_mib} MiB disk) vs "
                f"{second['stream_rss']:.1f} MiB ({args.large_mib} MiB disk): difference "
                f"{second['stream_rss'] - first['stream_rss']:+.1f} MiB"
            )
        if not args.skip_disk:
            _whole_disk(args.disk_mib, tmp, aws, env)


if __name__ == "__main__":
    main()
