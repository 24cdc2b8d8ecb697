"""Shared pieces of the e2e CLI tests: run ``main()`` in process, point it at the sandbox, and
read the sandbox's own view of a conversion task back through plain boto3 (the oracle)."""

from __future__ import annotations

import time
from typing import Any

from manifestkit.cli import main

ZONE = "us-east-1a"
# --wait polling fast enough for a sandbox task that completes in well under a second
WAIT = ["--wait", "--interval", "0.05"]


def endpoint_flags(sandbox: Any, ec2_endpoint_url: str | None = None) -> list[str]:
    """The region and endpoint flags for the sandbox; ``ec2_endpoint_url`` swaps in another EC2."""
    return [
        "--region",
        sandbox.region,
        "--s3-endpoint-url",
        sandbox.s3_endpoint_url,
        "--ec2-endpoint-url",
        ec2_endpoint_url or sandbox.ec2_endpoint_url,
    ]


def run(capsys: Any, argv: list[str]) -> tuple[int, str, str]:
    """``manifestkit ARGV`` in process: (exit code, stdout, stderr)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def objects(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def describe(ec2: Any, task_id: str) -> dict[str, Any]:
    (task,) = ec2.describe_conversion_tasks(ConversionTaskIds=[task_id])["ConversionTasks"]
    return task


def final_state(ec2: Any, task_id: str, timeout: float = 30) -> dict[str, Any]:
    """The task as EC2 describes it once completed or cancelled (or as it is after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        task = describe(ec2, task_id)
        if task["State"] in ("completed", "cancelled") or time.monotonic() > deadline:
            return task
        time.sleep(0.05)
