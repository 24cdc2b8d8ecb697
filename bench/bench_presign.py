#!/usr/bin/env python3
"""Per-URL presigning time: manifestkit's Presigner vs botocore's generate_presigned_url, same run.

    python bench/bench_presign.py [N]      # N URLs for manifestkit (default 100000)

botocore is timed on N/20 URLs (it is the slow side); both sign the same keys with the same
credentials, region, expiry and clock, and the first URLs are checked to be identical. Times are
CPU time of this process (time.process_time), so other load on a shared machine does not skew the
ratio; wall time is printed too. Two key sets: typical part keys (nothing to percent-encode) and
keys with spaces and UTF-8 (the quoting path). Goal: manifestkit >= 50x faster per URL.
"""

from __future__ import annotations

import datetime as dt
import os
import resource
import sys
import time
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.credentials import ReadOnlyCredentials  # noqa: E402

from manifestkit.s3.presign import Presigner  # noqa: E402

ACCESS, SECRET = "AKIDBENCHMARK", "bench/secret+key"
REGION, BUCKET = "eu-west-1", "bench-bucket"
NOW = dt.datetime(2026, 11, 27, 12, 0, 0)
METHODS = (("HEAD", "head_object"), ("GET", "get_object"), ("DELETE", "delete_object"))


def typical_key(i: int) -> str:
    return f"imports/0f0e0d0c-1b2a-4c3d-8e4f-5a6b7c8d9e0f/disk.vmdk.part{i // 3}"


def quoted_key(i: int) -> str:
    return f"imports/0f0e0d0c-1b2a-4c3d-8e4f-5a6b7c8d9e0f/disque n°{i // 3} (copie).vmdk"


def measure(name: str, key, n: int, n_boto: int, client) -> float:
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW):
        client.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "warm"})
        w0, t0 = time.perf_counter(), time.process_time()
        boto_urls = [
            client.generate_presigned_url(
                METHODS[i % 3][1], Params={"Bucket": BUCKET, "Key": key(i)}, ExpiresIn=604800
            )
            for i in range(n_boto)
        ]
        boto_cpu, boto_wall = time.process_time() - t0, time.perf_counter() - w0

    w0, t0 = time.perf_counter(), time.process_time()
    signer = Presigner(ReadOnlyCredentials(ACCESS, SECRET, None), REGION, now=NOW)
    ours = [signer.url(METHODS[i % 3][0], BUCKET, key(i)) for i in range(n)]
    ours_cpu, ours_wall = time.process_time() - t0, time.perf_counter() - w0

    assert ours[:n_boto] == boto_urls, "outputs differ"
    boto_us, ours_us = boto_cpu / n_boto * 1e6, ours_cpu / n * 1e6
    ratio = boto_us / ours_us
    print(f"[{name}] identical output on the first {n_boto} URLs: yes")
    print(
        f"  botocore generate_presigned_url: {n_boto:>7} URLs, {boto_us:8.2f} us/URL CPU "
        f"({boto_wall / n_boto * 1e6:.2f} wall)"
    )
    print(
        f"  manifestkit Presigner.url:       {n:>7} URLs, {ours_us:8.2f} us/URL CPU "
        f"({ours_wall / n * 1e6:.2f} wall)"
    )
    print(f"  ratio: manifestkit is {ratio:.1f}x faster per URL (goal >= 50x)")
    return ratio


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    n_boto = max(500, n // 20)
    client = boto3.Session(aws_access_key_id=ACCESS, aws_secret_access_key=SECRET).client(
        "s3",
        region_name=REGION,
        config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}),
    )
    measure("typical part keys", typical_key, n, n_boto, client)
    measure("keys with spaces and UTF-8", quoted_key, n, n_boto, client)
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {rss_mib:.1f} MiB (it keeps every URL in lists)")


if __name__ == "__main__":
    main()
