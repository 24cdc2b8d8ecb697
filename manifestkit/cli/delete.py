"""``manifestkit delete MANIFEST|URL``: remove an upload's parts and manifest from S3.

Uses the manifest's delete URLs; falls back to credentials when they expired. Refuses while a
conversion task still imports from the manifest (checked with
``manifestkit.ec2.find_active_task_for_manifest``) unless ``--ignore-active-task``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from manifestkit.cli._arguments import positive_int
from manifestkit.cli._aws_options import add_aws_options, aws_settings_for
from manifestkit.cli._output import emit, plural, progress_for
from manifestkit.errors import ManifestkitError, UsageError


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "delete",
        parents=[common],
        description="Delete every part and the manifest through their presigned delete URLs "
        "(with credentials when the URLs expired). Safe to run again.",
    )
    parser.add_argument("manifest", metavar="MANIFEST|URL", help="manifest file or presigned URL")
    parser.add_argument(
        "--ignore-active-task",
        action="store_true",
        help="delete even if a conversion task may still read the manifest",
    )
    parser.add_argument(
        "--bucket-owner", metavar="ACCOUNT", help="expected bucket owner for authenticated deletes"
    )
    parser.add_argument("--workers", type=positive_int, default=8, help="parallel deletes (8)")
    add_aws_options(parser, local=False)
    parser.set_defaults(run=run)


def _task_check(settings: Any) -> Callable[[str], str | None] | None:
    """``find_active_task_for_manifest`` bound to an EC2 client, when ``manifestkit.ec2`` has it."""
    try:
        ec2 = importlib.import_module("manifestkit.ec2")
    except ModuleNotFoundError:
        return None
    find = getattr(ec2, "find_active_task_for_manifest", None)
    if find is None:
        return None

    def check(manifest_ref: str) -> str | None:
        from manifestkit.aws import ec2_client, make_session

        try:
            return find(ec2_client(make_session(settings), settings), manifest_ref)
        except ManifestkitError as exc:
            raise UsageError(
                f"cannot check for conversion tasks still using the manifest: {exc}",
                fix="configure EC2 credentials and region, or pass --ignore-active-task if no "
                "import uses it",
            ) from exc

    return check


def run(args: argparse.Namespace) -> int:
    from manifestkit.aws import make_session, s3_client
    from manifestkit.s3.url_policy import UrlPolicy
    from manifestkit.workflow.delete import delete_upload

    with aws_settings_for(args) as settings:
        report = delete_upload(
            args.manifest,
            s3_client=lambda: s3_client(make_session(settings), settings),
            active_task_check=None if args.ignore_active_task else _task_check(settings),
            ignore_active_task=args.ignore_active_task,
            expected_owner=args.bucket_owner,
            workers=args.workers,
            progress=progress_for(args, unit="part"),
            url_policy=UrlPolicy.from_settings(settings),
        )
    if report.already_gone:
        text = f"nothing to delete: s3://{report.bucket}/{report.manifest_key} is already gone"
    else:
        text = (
            f"deleted {plural(report.parts, 'part')} and the manifest s3://{report.bucket}/"
            f"{report.manifest_key}"
        )
        if report.authenticated:
            text += f" ({report.authenticated} with credentials: their URLs had expired)"
    emit(args, report.to_dict(), text)
    return 0
