"""Upload throughput and memory: ``manifestkit`` vs boto3's ``upload_file``, same server, same run.

    python bench/bench_upload.py [--size-mib 384] [--rounds 2] [--sparse-mib 1000]

One local sandbox S3 (the signature-checking one, on 127.0.0.1) serves every run. Each upload runs
in its own subprocess so that its peak RSS (``ru_maxrss``) is its own. Printed:

1. throughput of ``manifestkit.workflow.upload_image`` (parts + HEAD verification pass + manifest)
   vs ``boto3.client("s3").upload_file`` with the default ``TransferConfig``, on the same random
   file, best of ``--rounds`` alternating runs, and the ratio (goal >= 1.3x);
2. peak RSS of each;
3. bytes put on the wire for a sparse RAW image that is 90 % holes (10 % of its 10 MiB parts hold
   data), counted by a botocore ``before-send`` hook in the uploading process (goal: about 10 %
   of the image + one part). ``upload_file`` sends every byte of a file by construction.
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
    before = _server_cpu()
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, endpoint, bucket, path],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    result["server_cpu"] = _server_cpu() - before
    return result


def _empty_bucket(s3, bucket: str) -> None:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=384)
    parser.add_argument("--rounds", type=int, default=2)
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

    from manifestkit.sandbox import Sandbox

    with tempfile.TemporaryDirectory() as tmp, Sandbox() as sandbox:
        endpoint = sandbox.s3_endpoint_url
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )
        bucket = "bench-upload"
        s3.create_bucket(Bucket=bucket)

        dense = os.path.join(tmp, "dense.raw")
        rng = random.Random(42)
        with open(dense, "wb") as out:
            for _ in range(args.size_mib):
                out.write(rng.randbytes(MiB))
        results: dict[str, list[dict]] = {"manifestkit": [], "boto3": []}
        for _ in range(args.rounds):
            for mode in ("manifestkit", "boto3"):
                results[mode].append(_run(mode, endpoint, bucket, dense))
                _empty_bucket(s3, bucket)
        size = args.size_mib * MiB
        print(
            f"dense RAW image: {args.size_mib} MiB random bytes, {args.rounds} rounds, "
            f"{os.cpu_count()} CPUs, sandbox S3 on loopback"
        )
        best = {}
        for mode, runs in results.items():
            fastest = min(runs, key=lambda r: r["seconds"])
            best[mode] = fastest
            rates = ", ".join(f"{size / MiB / r['seconds']:.1f}" for r in runs)
            print(
                f"  {mode:12s} best {fastest['seconds']:6.2f} s = "
                f"{size / MiB / fastest['seconds']:6.1f} MiB/s (runs: {rates} MiB/s); "
                f"peak RSS {max(r['rss_mib'] for r in runs):6.1f} MiB; "
                f"{fastest['requests']} requests"
            )
            cpu = min(r["cpu"] + r["server_cpu"] for r in runs)
            best[mode + "_cpu"] = cpu
            print(
                f"  {'':12s} CPU per run (client + server, least of the runs): {cpu:.2f} s "
                f"(client {min(r['cpu'] for r in runs):.2f} s)"
            )
        ratio = best["boto3"]["seconds"] / best["manifestkit"]["seconds"]
        median = statistics.median(r["seconds"] for r in results["boto3"]) / statistics.median(
            r["seconds"] for r in results["manifestkit"]
        )
        print(
            f"  throughput ratio manifestkit / upload_file: best {ratio:.2f}x, median "
            f"{median:.2f}x (goal >= 1.3x)"
        )
        cpu_ratio = best["boto3_cpu"] / best["manifestkit_cpu"]
        print(f"  CPU-cost ratio upload_file / manifestkit (client + server): {cpu_ratio:.2f}x")
        os.unlink(dense)

        sparse = os.path.join(tmp, "sparse.raw")
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
            f"sparse RAW image: {args.sparse_mib} MiB, {len(with_data)} of {parts} parts hold "
            f"data ({data / image:.0%})"
        )
        print(
            f"  manifestkit sent {run['bytes'] / MiB:7.1f} MiB = {run['bytes'] / image:.1%} of "
            f"the image (data {data / MiB:.0f} MiB + one 10 MiB zero part = "
            f"{(data + part) / MiB:.0f} MiB expected) in {run['seconds']:.2f} s, "
            f"peak RSS {run['rss_mib']:.1f} MiB"
        )
        print(f"  upload_file would send {image / MiB:.0f} MiB (every byte; not run)")


if __name__ == "__main__":
    main()
