"""Argument types and option groups more than one command takes: one definition, one help text.

``add_upload_options`` and ``upload_request_from`` are the ``UploadRequest`` half of ``manifestkit
upload``, ``import-instance`` and ``import-volume``, so the three accept and mean the same flags.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from manifestkit.images.info import FORMATS
from manifestkit.s3.presign import MAX_EXPIRES
from manifestkit.sizes import parse_size

if TYPE_CHECKING:
    from manifestkit.workflow.upload import UploadRequest

_DAY = 86400


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def expires_days(text: str) -> int:
    """argparse type: ``--expires DAYS`` in seconds, more than 0 and at most 7 days (SigV4)."""
    try:
        days = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of days {text!r}") from None
    seconds = int(days * _DAY)
    if not 0 < seconds <= MAX_EXPIRES:
        raise argparse.ArgumentTypeError(
            f"--expires {text} is outside 0-7 days (SigV4 presigned URLs live at most 7 days)"
        )
    return seconds


def add_format_option(parser: Any, *flags: str, help: str) -> None:  # noqa: A002 - argparse's name
    """``--format VMDK|VHD|RAW`` (case-insensitive); ``flags`` adds short names such as ``-f``."""
    parser.add_argument(*flags, "--format", type=str.upper, choices=FORMATS, help=help)


def add_transfer_options(parser: Any) -> None:
    """--workers --expires --bucket-owner --ignore-region-affinity (upload, resume, import-*)."""
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="parallel part uploads (default min(8, max(4, 2 x CPUs)); memory is "
        "about workers x part size)",
    )
    parser.add_argument(
        "--expires",
        type=expires_days,
        default=MAX_EXPIRES,
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


def add_upload_options(parser: Any, *, bucket_help: str) -> None:
    """Where an image goes and how: the options ``UploadRequest`` takes from the command line."""
    parser.add_argument("-b", "--bucket", help=bucket_help)
    parser.add_argument("--prefix", default="", help="key prefix inside the bucket")
    parser.add_argument(
        "--part-size",
        type=parse_size,
        default=None,
        help="part size (default 10MiB; with --resume, the recorded one)",
    )
    parser.add_argument(
        "--create-bucket",
        action="store_true",
        help="create the bucket (in the EC2 region) when it does not exist",
    )
    parser.add_argument(
        "--convert",
        action="store_true",
        help="when IMAGE is not importable (or is a whole disk, /dev/sdb), convert it to a "
        "streamOptimized VMDK while uploading: one pass, no local copy",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="read a whole disk even while it is mounted read-write (its copy may be torn)",
    )
    parser.add_argument(
        "--dont-verify-format",
        action="store_true",
        help="upload even when the image is not importable as it is",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where to keep the upload state (default: beside the image)",
    )
    add_transfer_options(parser)


def upload_request_from(
    args: argparse.Namespace, *, bucket: str | None, **more: Any
) -> UploadRequest:
    """The ``UploadRequest`` the options of ``add_upload_options`` (and ``--format``,
    ``--volume-size``, ``--local``) describe; ``more`` sets the fields only one command has."""
    from manifestkit.workflow.upload import UploadRequest

    return UploadRequest(
        image=args.image,
        bucket=bucket,
        prefix=args.prefix,
        part_size=args.part_size,
        expires_in=args.expires,
        volume_gib=args.volume_size,
        workers=args.workers,
        create_bucket=args.create_bucket or args.local,
        ignore_region_affinity=args.ignore_region_affinity,
        bucket_owner=args.bucket_owner,
        state_dir=args.state_dir,
        convert=args.convert,
        force=args.force,
        dont_verify_format=args.dont_verify_format,
        format=args.format,
        # the embedded sandbox ends with the command: there is nothing to resume afterwards
        record_state=not args.local,
        **more,
    )
