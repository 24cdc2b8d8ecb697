"""``manifestkit upload IMAGE --bucket B`` and ``manifestkit resume MANIFEST|URL IMAGE``.

The manifest's presigned GET URL is the command's result: printed on stdout (a bearer token, so
nowhere else above debug level). Ctrl-C exits 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from typing import TYPE_CHECKING, Any

from manifestkit.cli._arguments import (
    add_format_option,
    add_transfer_options,
    add_upload_options,
    positive_int,
    upload_request_from,
)
from manifestkit.cli._aws_options import add_aws_options, aws_settings_for
from manifestkit.cli._output import emit, plural, progress_for
from manifestkit.errors import ManifestkitError, UsageError

if TYPE_CHECKING:
    from manifestkit.workflow.upload import UploadResult

log = logging.getLogger("manifestkit")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    upload = subparsers.add_parser(
        "upload",
        parents=[common],
        description="Upload IMAGE to S3 in parts (concurrent, MD5-checked, resumable), verify "
        "every part, upload the manifest, and print its presigned GET URL.",
    )
    upload.add_argument(
        "image",
        metavar="IMAGE",
        help="the disk image file; a whole disk (/dev/sdb, an LVM volume) with --convert; or - "
        "to read a RAW disk from standard input (a pipe: such an upload cannot be resumed)",
    )
    add_upload_options(upload, bucket_help="S3 bucket (required unless --resume)")
    upload.add_argument(
        "-s",
        "--volume-size",
        type=positive_int,
        metavar="GIB",
        help="volume size in GiB (default: the image's capacity)",
    )
    add_format_option(upload, help="the image format you expect (checked against the content)")
    upload.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted upload of IMAGE (found via its state file)",
    )
    upload.add_argument(
        "--no-dedupe-zeros",
        dest="dedupe_zeros",
        action="store_false",
        help="send all-zero parts in full instead of copying one server-side",
    )
    add_aws_options(upload)
    upload.set_defaults(run=run_upload)

    resume = subparsers.add_parser(
        "resume",
        parents=[common],
        description="Keep the parts already in S3 whose size and MD5 match IMAGE, send the rest, "
        "and write a new manifest when its URLs expire within a day.",
    )
    resume.add_argument(
        "manifest", metavar="MANIFEST|URL", help="the upload's manifest file or presigned URL"
    )
    resume.add_argument("image", metavar="IMAGE", help="the disk image file the upload is of")
    add_transfer_options(resume)
    add_aws_options(resume)
    resume.set_defaults(run=run_resume)


def _report(args: argparse.Namespace, result: UploadResult) -> int:
    stats = result.stats
    text = result.manifest_url
    emit(args, result.to_dict(), text)
    log.info(
        "%s in s3://%s/%s: %d sent, %d copied server-side, %d already there; URLs valid until %s",
        plural(stats.parts, "part"),
        result.bucket,
        result.manifest_key.rsplit("/", 1)[0],
        stats.put,
        stats.copied,
        stats.kept,
        result.expires_at,
    )
    return 0


def _interrupted(hint: str) -> int:
    print(
        f"manifestkit: interrupted; the parts sent so far are kept. Resume with:\n  {hint}",
        file=sys.stderr,
    )
    return 130


def run_upload(args: argparse.Namespace) -> int:
    from manifestkit.workflow.upload import upload_image

    if not args.bucket and not args.resume:
        raise UsageError("upload needs --bucket", fix="pass --bucket BUCKET")
    if args.new_upload and args.resume:
        raise UsageError(
            "--new-upload and --resume contradict each other",
            fix="pass --resume to continue the recorded upload, --new-upload to start another",
        )
    if args.local and args.resume:
        raise UsageError(
            "--resume cannot be used with --local (the sandbox of the interrupted run is gone)",
            fix="run the upload again with --local",
        )
    request = upload_request_from(
        args, bucket=args.bucket, resume=args.resume, dedupe_zeros=args.dedupe_zeros
    )
    try:
        with aws_settings_for(args) as settings:
            result = upload_image(
                request, settings, progress=progress_for(args), notify=log.warning
            )
    except KeyboardInterrupt:
        if args.image == "-":
            print(
                "manifestkit: interrupted; an upload from standard input cannot be resumed (the "
                "pipe cannot be read again): no manifest was written; run the whole command again",
                file=sys.stderr,
            )
            return 130
        if args.local or not unfinished_upload_recorded(args.image, args.state_dir):
            return _interrupted_with_nothing_to_resume(args.local)
        return _interrupted(_resume_command(args))
    return _report(args, result)


def unfinished_upload_recorded(image: str, state_dir: str | None) -> bool:
    """Whether ``--resume`` has something to continue: an unfinished upload's state file."""
    from manifestkit.workflow.upload_record import UploadRecord

    try:
        record = UploadRecord.find(image, state_dir)
    except ManifestkitError:
        return False
    return record is not None and not record.recorded.complete


def _interrupted_with_nothing_to_resume(local: bool) -> int:
    # Ctrl-C while converting or checking the bucket, or with --local: --resume would only say
    # "no upload to resume"
    why = "the --local sandbox is gone" if local else "no part was recorded yet"
    print(
        f"manifestkit: interrupted; {why}, so there is nothing to resume: run the same "
        "command again",
        file=sys.stderr,
    )
    return 130


def _resume_command(args: argparse.Namespace) -> str:
    words = ["manifestkit", "upload", args.image, "--resume"]
    if args.state_dir:
        words += ["--state-dir", args.state_dir]
    for flag in ("region", "profile", "s3_endpoint_url"):
        value = getattr(args, flag, None)
        if value:
            words += [f"--{flag.replace('_', '-')}", value]
    if args.bucket_owner:
        words += ["--bucket-owner", args.bucket_owner]
    if args.convert:
        words.append("--convert")
    if args.force:
        words.append("--force")
    return shlex.join(words)


def run_resume(args: argparse.Namespace) -> int:
    from manifestkit.workflow.resume import resume_upload

    if getattr(args, "local", False):
        raise UsageError(
            "resume cannot be used with --local (the sandbox of the first run is gone)",
            fix="run manifestkit upload IMAGE --local again",
        )
    try:
        with aws_settings_for(args) as settings:
            result = resume_upload(
                args.manifest,
                args.image,
                settings,
                workers=args.workers,
                expires_in=args.expires,
                bucket_owner=args.bucket_owner,
                ignore_region_affinity=args.ignore_region_affinity,
                progress=progress_for(args),
            )
    except KeyboardInterrupt:
        # a URL is a bearer token: name it, do not print it
        manifest = (
            "MANIFEST_URL" if args.manifest.startswith(("http://", "https://")) else (args.manifest)
        )
        hint = shlex.join(["manifestkit", "resume", manifest, args.image])
        return _interrupted(hint)
    return _report(args, result)
