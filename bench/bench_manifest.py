#!/usr/bin/env python3
"""``manifestkit manifest`` on a 1 TiB sparse RAW image, and validating the result.

    python bench/bench_manifest.py [SIZE]     # default 1T (truncate -s 1T), 10 MiB parts

(1) Builds the manifest in a child process (``python -m manifestkit manifest``: inspect, plan,
    presign 3 URLs per part + the self-destruct URL, write the file) and reads the child's own
    CPU time and peak RSS from ``os.wait4``. Baseline, same run: botocore's
    ``generate_presigned_url`` timed on a sample of 5,000 URLs and extrapolated linearly to the
    manifest's 3 * parts + 1 URLs. Goals: <= 1/15 of botocore's presigning alone; peak RSS
    <= 64 MiB.
(2) Validates that manifest in child processes: ``manifestkit validate`` (streaming: XSD and
    semantic rules), with ``--verify-signatures`` (every signature recomputed too), lxml's
    streaming ``iterparse(schema=...)`` alone (XSD only), and lxml's whole-tree ``etree.parse`` +
    ``XMLSchema.validate`` (XSD only).

(1) compares CPU times; (2)'s ratio to xmllint is on wall time (validate uses two cores: its
XSD check runs in a child process beside the rule checks), with CPU times printed alongside.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from manifestkit.manifest import schema_path  # noqa: E402
from manifestkit.sizes import MiB, format_size, parse_size  # noqa: E402

BOTO_SAMPLE = 5_000
ENV = {
    **os.environ,
    "AWS_ACCESS_KEY_ID": "AKIDBENCHMARK",
    "AWS_SECRET_ACCESS_KEY": "bench/secret+key",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "PYTHONPATH": ROOT,
}
for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
    ENV.pop(name, None)


# The child reports its own peak RSS: VmHWM of /proc/self/status belongs to the exec'd image.
# (ru_maxrss from wait4 would not do: Linux carries the forked parent's high-water mark over exec.)
_PEAK = (
    "import atexit, sys\n"
    "def _peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            open(_out, 'w').write(line.split()[1])\n"
    "_out = sys.argv.pop(1)\n"
    "atexit.register(_peak)\n"
)


def child(argv: list[str], stdout: str) -> tuple[float, float, float]:
    """Run python ``argv`` (``-m mod ...`` or ``-c code ...``); (wall s, CPU s, peak RSS MiB)."""
    peak_file = stdout + ".peak"
    if argv[0] == "-m":
        code = (
            f"{_PEAK}import runpy; sys.argv[0] = {argv[1]!r}; "
            f"runpy.run_module({argv[1]!r}, run_name='__main__', alter_sys=True)"
        )
        rest = argv[2:]
    else:
        code, rest = _PEAK + argv[1], argv[2:]
    with open(stdout, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", code, peak_file, *rest], stdout=out, env=ENV)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{argv[:4]} exited {proc.returncode}; see {stdout}")
    with open(peak_file) as f:
        peak_mib = int(f.read()) / 1024
    return wall, usage.ru_utime + usage.ru_stime, peak_mib


def _xmllint() -> str | None:
    """xmllint (Debian libxml2-utils), installed with apt-get when missing and possible."""
    found = shutil.which("xmllint")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-qq", "libxml2-utils"], capture_output=True)
        found = shutil.which("xmllint")
    return found


def timed_command(cmd: list[str]) -> tuple[float, float]:
    """(wall s, CPU s) of one command, from wait4."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{cmd[:3]} failed")
    return time.perf_counter() - start, usage.ru_utime + usage.ru_stime


def xmllint_ratio(manifest: str, tmp: str, rounds: int = 3) -> None:
    """``manifestkit validate`` vs ``xmllint --stream --schema``: alternating runs. The ratio is
    on wall time: validate runs libxml2's XSD check in a process of its own beside the rule
    checks (two cores), so its CPU time is the sum of both and its wall time the slower one."""
    xmllint = _xmllint()
    if xmllint is None:
        print("    xmllint not found (apt-get install libxml2-utils): no xmllint ratio")
        return
    ours, theirs, loads = [], [], []
    for _ in range(rounds):
        loads.append(os.getloadavg()[0])
        theirs.append(
            timed_command(
                [xmllint, "--stream", "--noout", "--schema", str(schema_path()), manifest]
            )
        )
        loads.append(os.getloadavg()[0])
        wall, cpu, rss = child(
            ["-m", "manifestkit", "validate", manifest], os.path.join(tmp, "v.out")
        )
        ours.append((wall, cpu, rss))
    med = statistics.median
    o_wall, t_wall = [r[0] for r in ours], [r[0] for r in theirs]
    o_cpu, t_cpu = [r[1] for r in ours], [r[1] for r in theirs]
    print(
        f"    xmllint --stream --schema vs manifestkit validate, {rounds} alternating runs "
        f"(1-min load average at each: {', '.join(f'{x:.2f}' for x in loads)}; "
        f"{os.cpu_count()} CPUs):"
    )
    print(
        f"      xmllint  wall s: min {min(t_wall):.2f} median {med(t_wall):.2f}; "
        f"CPU s: min {min(t_cpu):.2f} median {med(t_cpu):.2f}"
    )
    print(
        f"      validate wall s: min {min(o_wall):.2f} median {med(o_wall):.2f}; "
        f"CPU s: min {min(o_cpu):.2f} median {med(o_cpu):.2f} (with its XSD-check child); "
        f"peak RSS {max(r[2] for r in ours):.1f} MiB (this process; the child's is ~18 MiB)"
    )
    print(
        f"      ratio validate / xmllint on WALL time: min-to-min "
        f"{min(o_wall) / min(t_wall):.2f}x, median {med(o_wall) / med(t_wall):.2f}x "
        f"(goal <= 1.5x); on CPU: min-to-min {min(o_cpu) / min(t_cpu):.2f}x, median "
        f"{med(o_cpu) / med(t_cpu):.2f}x"
    )


def botocore_per_url() -> tuple[float, float]:
    """CPU and wall seconds per URL of botocore's presigning (HEAD/GET/DELETE round robin)."""
    client = boto3.Session(
        aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
    ).client(
        "s3",
        region_name="eu-west-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}),
    )
    ops = ("head_object", "get_object", "delete_object")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=now):
        client.generate_presigned_url("get_object", Params={"Bucket": "bench-bucket", "Key": "w"})
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(BOTO_SAMPLE):
            client.generate_presigned_url(
                ops[i % 3],
                Params={
                    "Bucket": "bench-bucket",
                    "Key": f"bench/0f0e0d0c-1b2a-4c3d-8e4f-5a6b7c8d9e0f/disk.raw.part{i // 3}",
                },
                ExpiresIn=604800,
            )
        return (time.process_time() - c0) / BOTO_SAMPLE, (time.perf_counter() - w0) / BOTO_SAMPLE


def main() -> None:
    size = parse_size(sys.argv[1]) if len(sys.argv) > 1 else parse_size("1T")
    tmp = tempfile.mkdtemp(prefix="bench-manifest-")
    try:
        image = os.path.join(tmp, "disk.raw")
        with open(image, "wb") as f:
            f.truncate(size)  # sparse: no data blocks
        manifest = os.path.join(tmp, "disk.rawmanifest.xml")

        wall, cpu, rss = child(
            [
                "-m",
                "manifestkit",
                "manifest",
                image,
                "--bucket",
                "bench-bucket",
                "--prefix",
                "bench",
                "--part-size",
                "10MiB",
                "--output-file",
                manifest,
                "--output",
                "json",
            ],
            os.path.join(tmp, "manifest.json"),
        )
        with open(os.path.join(tmp, "manifest.json")) as f:
            doc = json.load(f)
        parts = doc["part_count"]
        urls = 3 * parts + 1
        boto_cpu, boto_wall = botocore_per_url()
        boto_total_cpu, boto_total_wall = boto_cpu * urls, boto_wall * urls
        mbytes = os.path.getsize(manifest)
        print(
            f"image: {format_size(size)} sparse RAW, 10 MiB parts -> {parts} parts, {urls} URLs, "
            f"manifest {mbytes / MiB:.1f} MiB"
        )
        print(
            f"(1) manifestkit manifest: {cpu:.2f} s CPU ({wall:.2f} s wall), peak RSS "
            f"{rss:.1f} MiB (goal <= 64 MiB)"
        )
        print(
            f"    botocore presigning alone, extrapolated from {BOTO_SAMPLE} URLs to {urls}: "
            f"{boto_total_cpu:.1f} s CPU ({boto_total_wall:.1f} s wall; "
            f"{boto_cpu * 1e6:.1f} us/URL)"
        )
        print(
            f"    ratio: manifestkit manifest takes 1/{boto_total_cpu / cpu:.1f} of botocore's "
            f"presigning time (goal <= 1/15)"
        )

        runs = [
            (
                "manifestkit validate (streaming, XSD + semantic rules)",
                ["-m", "manifestkit", "validate", manifest],
            ),
            (
                "manifestkit validate --verify-signatures (streaming, + every signature)",
                ["-m", "manifestkit", "validate", manifest, "--verify-signatures"],
            ),
            (
                "lxml streaming: iterparse(schema=...) clearing each part (XSD only)",
                [
                    "-c",
                    "from lxml import etree; "
                    "s = etree.XMLSchema(etree.parse(sys.argv[1])); "
                    "ctx = etree.iterparse(sys.argv[2], tag='part', schema=s, "
                    "resolve_entities=False, no_network=True, load_dtd=False)\n"
                    "for _, e in ctx:\n"
                    "    e.clear()\n"
                    "    while e.getprevious() is not None: del e.getparent()[0]",
                    str(schema_path()),
                    manifest,
                ],
            ),
            (
                "lxml whole tree: etree.parse + XMLSchema.validate (XSD only)",
                [
                    "-c",
                    "from lxml import etree; "
                    "s = etree.XMLSchema(etree.parse(sys.argv[1])); "
                    "t = etree.parse(sys.argv[2], etree.XMLParser(huge_tree=True)); "
                    "sys.exit(0 if s.validate(t) else 3)",
                    str(schema_path()),
                    manifest,
                ],
            ),
        ]
        print("(2) validating that manifest:")
        for label, argv in runs:
            v_wall, v_cpu, v_rss = child(argv, os.path.join(tmp, "validate.out"))
            print(f"    {label}: {v_cpu:.2f} s CPU ({v_wall:.2f} s wall), peak RSS {v_rss:.1f} MiB")
        xmllint_ratio(manifest, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
