#!/usr/bin/env python3
"""Benchmark ``validate`` on hostile XML (issue 10 item 6): one huge attribute in a small manifest.

    python bench/bench_validate_hostile.py [--mib 50] [--runs 3]

Baseline, in the same run: libxml2 alone (lxml parsing the document against the XSD, what the
validation itself costs). Measured: ``manifestkit validate`` in a child process (wall seconds,
peak RSS), min and median of ``--runs`` alternating runs, and the ratio to the baseline. Before
the fix the xmlschema pass that only words the error took 145 s and 327 MB on a 50 MB attribute.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from peak_rss import PeakRss, mib_text  # noqa: E402

from manifestkit.manifest import write_manifest  # noqa: E402
from manifestkit.parts import PartPlan  # noqa: E402
from manifestkit.s3.presign import Presigner  # noqa: E402


def document(mib: int) -> bytes:
    import datetime as dt

    from botocore.credentials import ReadOnlyCredentials

    signer = Presigner(
        ReadOnlyCredentials("AKIDBENCH", "bench-secret", None),
        "us-east-1",
        now=dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    )
    out = io.BytesIO()
    plan = PartPlan(1000, 300, "disk.img", "bench", upload_id="hostile")
    write_manifest(
        out, plan=plan, file_format="RAW", bucket="bench-bucket", presigner=signer, volume_gib=1
    )
    return out.getvalue().replace(b"<parts ", b'<parts x="' + b"a" * (mib * 1024 * 1024) + b'" ')


def child(argv: list[str]) -> tuple[float, int | None, int]:
    """(seconds, peak RSS KiB of this child alone, exit code). The RSS comes from ``peak_rss``:
    wait4's ru_maxrss would start at this bench's own, which holds the whole document."""
    peak = PeakRss(argv)
    start = time.perf_counter()
    proc = subprocess.Popen(peak.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return seconds, peak.kib(), proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "hostile.xml")
        Path(path).write_bytes(document(args.mib))
        baseline_code = (
            "import sys; from lxml import etree; from manifestkit.manifest.parse import "
            "lxml_schema\ntry:\n for _ in etree.iterparse(sys.argv[1], schema=lxml_schema(), "
            "huge_tree=False): pass\nexcept etree.XMLSyntaxError: pass"
        )
        base_argv = [sys.executable, "-c", baseline_code, path]
        tool_argv = [sys.executable, "-m", "manifestkit", "validate", "--at", "2026-01-02", path]
        base, tool = [], []
        for _ in range(args.runs):  # alternating, so load changes hit both alike
            base.append(child(base_argv))
            tool.append(child(tool_argv))
        for name, runs in (("libxml2 alone (baseline)", base), ("manifestkit validate", tool)):
            secs = [r[0] for r in runs]
            print(
                f"{name:26} min {min(secs):6.2f} s  median {statistics.median(secs):6.2f} s  "
                f"peak RSS {mib_text(max((r[1] for r in runs if r[1] is not None), default=None))}"
                f"  exit {runs[-1][2]}"
            )
        ratio = min(r[0] for r in tool) / min(r[0] for r in base)
        print(f"ratio validate / baseline (min): {ratio:.2f}; {args.mib} MiB attribute")
        print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
