"""``manifestkit upload IMAGE --bucket B`` and ``manifestkit resume MANIFEST|URL IMAGE``.

The manifest's presigned GET URL is the command's result: printed on stdout (a bearer token, so
nowhere else above debug level). Ctrl-C exits 130 and says how to resume.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from typing import Any

from manifestkit.cli._aws_options import add_aws_options, aws_settings_for
from manifestkit.cli._output import emit, progress_for
from manifestkit.errors import UsageError
from manifestkit.sizes import parse_size

log = logging.getLogger("manifestkit")

_DAY = 86400


def _expires(text: str) -> int:
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of days {text!r}") from None
    seconds = int(days * _DAY)
    if not 0 < seconds <= 7 * _DAY:
        raise argparse.ArgumentTypeError(
            f"--expires {text} is outside 0-7 days (SigV4 presigned URLs live at most 7 days)"
        )
    return seconds


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _transfer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_positive,
        default=None,
        help="parallel part uploads (default min(8, max(4, 2 x CPUs)); memory is "
        "about workers x part size)",
    )
    parser.add_argument(
        "--expires",
        type=_expires,
        default=7 * _DAY,
        metavar="DAYS",
        help="lifetime of the manifest's URLs in days (default and maximum 7)",
    )
    parser.add_argument(
        "--bucket-owner",
        metavar="ACCOUNT",
        help="expected bucket owner account id (ExpectedBucketOwner on every call)",
    )
    parser.add_argument(
        "--ignore-region-affinity",
        action="store_true",
        help="allow a bucket outside the EC2 region",
    )


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    upload = subparsers.add_parser(
        "upload",
        parents=[common],
        help="upload an image's parts and its manifest to S3; prints the manifest URL",
        description="Upload IMAGE to S3 in parts (concurrent, MD5-checked, resumable), verify "
        "every part, upload the manifest, and print its presigned GET URL.",
    )
    upload.add_argument("image", help="the disk image file")
    upload.add_argument("--bucket", "-b", help="S3 bucket (required unless --resume)")
    upload.add_argument("--prefix", default="", help="key prefix inside the bucket")
    upload.add_argument(
        "--part-size",
        type=parse_size,
        default=None,
        help="part size (default 10MiB; with --resume, the recorded one)",
    )
    upload.add_argument(
        "--volume-size",
        type=_positive,
        metavar="GIB",
        help="volume size in GiB (default: the image's capacity)",
    )
    upload.add_argument(
        "--format",
        type=str.upper,
        choices=("VMDK", "VHD", "RAW"),
        help="the image format you expect (checked against the content)",
    )
    upload.add_argument(
        "--create-bucket",
        action="store_true",
        help="create the bucket (in the EC2 region) when it does not exist",
    )
    upload.add_argument(
        "--resume",
        action="store_true",
        help="continue the interrupted upload of IMAGE (found via its state file)",
    )
    upload.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where to keep the upload state (default: beside the image)",
    )
    upload.add_argument(
        "--convert",
        action="store_true",
        help="upload a converted streamOptimized copy when IMAGE is not importable",
    )
    upload.add_argument(
        "--dont-verify-format",
        action="store_true",
        help="upload even when the image is not importable as it is",
    )
    upload.add_argument(
        "--no-dedupe-zeros",
        dest="dedupe_zeros",
        action="store_false",
        help="send all-zero parts in full instead of copying one server-side",
    )
    _transfer_options(upload)
    add_aws_options(upload)
    upload.set_defaults(run=run_upload)

    resume = subparsers.add_parser(
        "resume",
        parents=[common],
        help="finish an upload from its manifest (file or URL) and the local image",
        description="Keep the parts already in S3 whose size and MD5 match IMAGE, send the rest, "
        "and write a new manifest when its URLs expire within a day.",
    )
    resume.add_argument("manifest", metavar="MANIFEST|URL")
    resume.add_argument("image")
    _transfer_options(resume)
    add_aws_options(resume)
    resume.set_defaults(run=run_resume)


def _report(args: argparse.Namespace, result: Any) -> int:
    stats = result.stats
    text = result.manifest_url
    emit(args, result.to_dict(), text)
    log.info(
        "%d parts in s3://%s/%s: %d sent, %d copied server-side, %d already there; URLs valid "
        "until %s",
        stats.parts,
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
    from manifestkit.workflow import UploadRequest, upload_image

    if not args.bucket and not args.resume:
        raise UsageError("upload needs --bucket", fix="pass --bucket BUCKET")
    if args.local and args.resume:
        raise UsageError("--resume cannot be used with --local (the sandbox is gone)")
    request = UploadRequest(
        image=args.image,
        bucket=args.bucket,
        prefix=args.prefix,
        part_size=args.part_size,
        expires_in=args.expires,
        volume_gib=args.volume_size,
        workers=args.workers,
        create_bucket=args.create_bucket or args.local,
        ignore_region_affinity=args.ignore_region_affinity,
        bucket_owner=args.bucket_owner,
        resume=args.resume,
        state_dir=args.state_dir,
        convert=args.convert,
        dont_verify_format=args.dont_verify_format,
        format=args.format,
        dedupe_zeros=args.dedupe_zeros,
        record_state=not args.local,  # the embedded sandbox ends with the command
    )
    try:
        with aws_settings_for(args) as settings:
            result = upload_image(
                request, settings, progress=progress_for(args), notify=log.warning
            )
    except KeyboardInterrupt:
        return _interrupted(_resume_command(args))
    return _report(args, result)


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
    return shlex.join(words)


def run_resume(args: argparse.Namespace) -> int:
    from manifestkit.workflow import resume_upload

    if getattr(args, "local", False):
        raise UsageError("resume cannot be used with --local (the sandbox is gone)")
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
