"""``manifestkit verify MANIFEST|URL [--image IMAGE]``: check an upload as the importer reads it.

Exit 0 when every part is there with the right size (and bytes, with ``--image``); 1 when parts
are missing, the wrong size, different or unreachable; 2 for an invalid manifest or bad input.
Needs no credentials: everything goes through the manifest's own presigned URLs.
"""

from __future__ import annotations

import argparse
from typing import Any

from manifestkit.cli._arguments import positive_int
from manifestkit.cli._output import emit, plural, progress_for
from manifestkit.sizes import format_size

#: problems listed in text output (all of them are in --output json)
TEXT_LIMIT = 20


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "verify",
        parents=[common],
        description="Fetch the manifest, validate it, HEAD every part and check its size; with "
        "--image, GET every part and compare it with the local bytes. No credentials needed.",
    )
    parser.add_argument("manifest", metavar="MANIFEST|URL", help="manifest file or presigned URL")
    parser.add_argument(
        "--image", metavar="IMAGE", help="the local image: compare every part's bytes with it"
    )
    parser.add_argument("--workers", type=positive_int, default=8, help="parallel requests (8)")
    # where the manifest's URLs may point besides AWS (SECURITY.md): the user's own endpoint
    parser.add_argument(
        "--s3-endpoint-url", help="S3 endpoint the URLs may use (default: AWS_ENDPOINT_URL_S3)"
    )
    parser.add_argument("--profile", help="named profile whose endpoint_url the URLs may use")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from manifestkit.aws import AwsSettings
    from manifestkit.s3.url_policy import UrlPolicy
    from manifestkit.workflow.verify import verify_manifest

    settings = AwsSettings(profile=args.profile, s3_endpoint_url=args.s3_endpoint_url)
    report = verify_manifest(
        args.manifest,
        image=args.image,
        workers=args.workers,
        progress=progress_for(args),
        url_policy=UrlPolicy.from_settings(settings),
    )
    lines = [f"manifest: {report.manifest}"]
    for problem in report.problems[:TEXT_LIMIT]:
        lines.append(f"  part {problem.index} ({problem.key}): {problem.kind}: {problem.message}")
    if len(report.problems) > TEXT_LIMIT:
        lines.append(
            f"  ... and {len(report.problems) - TEXT_LIMIT} more (--output json lists all)"
        )
    checked = "sizes and contents" if report.compared_content else "sizes"
    parts = plural(report.parts, "part")
    if report.problems:
        lines.append(f"FAILED: {len(report.problems)} of {parts} have problems")
    else:
        lines.append(f"OK: {parts}, {format_size(report.size)}, {checked} checked")
    emit(args, report.to_dict(), "\n".join(lines))
    return report.exit_code
