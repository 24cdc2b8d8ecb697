#!/usr/bin/env python3
"""Regenerate ``sample-manifest.xml`` from ``tiny-stream.vmdk``, byte for byte.

    python samples/make_sample_manifest.py [OUTPUT]     # default: samples/sample-manifest.xml

The URLs are signed with AWS's documented example key pair (not a real account), at a fixed
instant, for a fixed upload folder, so every run writes the same file. Nothing is sent anywhere.
The 64 KiB part size gives the tiny image a few parts, so the sample shows more than one.
"""

from __future__ import annotations

import datetime as dt
import os
import sys

from botocore.credentials import ReadOnlyCredentials

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # run from a checkout without installing

from manifestkit.images import inspect_image  # noqa: E402
from manifestkit.manifest import build_manifest_file  # noqa: E402
from manifestkit.parts import PartPlan  # noqa: E402
from manifestkit.s3.presign import Presigner  # noqa: E402

#: AWS's documentation example credentials: throwaway by design
CREDENTIALS = ReadOnlyCredentials(
    "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", None
)
SIGNED_AT = dt.datetime(2026, 1, 1, 0, 0, 0, tzinfo=dt.timezone.utc)
REGION = "us-east-1"
BUCKET = "manifestkit-sample"
PREFIX = "imports"
UPLOAD_ID = "00000000-0000-4000-8000-6d616e69666b"
PART_SIZE = 64 * 1024


def make(output: str) -> None:
    image = os.path.join(HERE, "tiny-stream.vmdk")
    info = inspect_image(image)
    plan = PartPlan.for_file(
        image, info.file_bytes, part_size=PART_SIZE, prefix=PREFIX, upload_id=UPLOAD_ID
    )
    build_manifest_file(
        output,
        plan=plan,
        file_format=info.format,
        bucket=BUCKET,
        presigner=Presigner(CREDENTIALS, REGION, now=SIGNED_AT),
        volume_gib=info.volume_gib,
        capacity_bytes=info.capacity_bytes,
    )


if __name__ == "__main__":
    make(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "sample-manifest.xml"))
