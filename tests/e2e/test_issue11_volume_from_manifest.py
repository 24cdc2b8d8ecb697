"""Issue 11 item 1, the --manifest-url path: the volume requested holds the image EC2 is told
about (Image.Bytes = the manifest's size), whatever the manifest's own volume-size says."""

from __future__ import annotations

import io
import json
from typing import Any

import boto3

from manifestkit.manifest import write_manifest
from manifestkit.parts import PartPlan
from manifestkit.s3.presign import Presigner

from .helpers import ZONE, describe, endpoint_flags, run

GiB = 1024**3


def small_volume_manifest(sandbox: Any, s3: Any, bucket: str) -> str:
    """A manifest for a 2^30 + 512-byte VHD (a 1 GiB fixed VHD) saying volume-size 1, as another
    tool may write it; its parts are never uploaded. Returns its presigned GET URL."""
    plan = PartPlan(GiB + 512, 512 * 1024**2, "hyperv.vhd", "imports", upload_id="vol-test")
    out = io.BytesIO()
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name=sandbox.region
    )
    presigner = Presigner.from_session(session, sandbox.aws_settings(), expires_in=3600)
    write_manifest(
        out, plan=plan, file_format="VHD", bucket=bucket, presigner=presigner, volume_gib=2
    )
    body = out.getvalue().replace(b"<volume-size>2<", b"<volume-size>1<")
    s3.put_object(Bucket=bucket, Key=plan.manifest_key, Body=body)
    return s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": plan.manifest_key}, ExpiresIn=3600
    )


def test_issue11_item1_manifest_url_volume_holds_the_image(
    sandbox: Any, s3: Any, ec2: Any, bucket: str, capsys: Any
) -> None:
    url = small_volume_manifest(sandbox, s3, bucket)
    argv = ["import-volume", "-z", ZONE, "--manifest-url", url, *endpoint_flags(sandbox)]
    code, _, err = run(capsys, [*argv, "--volume-size", "1"])
    assert code == 2 and "give at least 2" in err, err

    code, out, err = run(capsys, [*argv, "--output", "json"])
    assert code == 0, err
    task = describe(ec2, json.loads(out)["task"]["id"])
    volume = task["ImportVolume"]
    assert volume["Image"]["Size"] == GiB + 512
    assert volume["Volume"]["Size"] == 2
