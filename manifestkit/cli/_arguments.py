"""Argument types and option groups more than one command takes: one definition, one help text.

``add_upload_options`` and ``upload_request_from`` are the ``UploadRequest`` half of ``manifestkit
upload``, ``import-instance`` and ``import-volume``, so the three accept and mean the same flags.
"""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from manifestkit.errors import UsageError
from manifestkit.images.info import FORMATS
from manifestkit.sizes import parse_size

if TYPE_CHECKING:
    from manifestkit.workflow.upload import UploadRequest

_DAY = 86400
#: SigV4 presigned URLs live at most 7 days (the same number as ``s3.presign.MAX_EXPIRES``, which
#: is not imported here: it would load botocore into every command that parses options)
_MAX_DAYS = 7

#: the ImportInstance platforms, as EC2 spells them (its API documents Windows only)
PLATFORMS = ("Windows", "Linux")


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def expires_days(text: str) -> int:
    """argparse type: ``-x/--expires DAYS`` in seconds, 1 second to 7 days (SigV4's limit).

    Raises ``UsageError`` (not argparse's error) so the message says the range and no more."""
    try:
        days = float(text)
    except ValueError:
        raise UsageError(
            f"--expires {text!r} is not a number of days", fix="give 7 or less (decimals allowed)"
        ) from None
    seconds = round(days * _DAY) if math.isfinite(days) else 0
    if not 0 < seconds <= _MAX_DAYS * _DAY:
        raise UsageError(
            f"--expires {text} is outside the range presigned URLs allow",
            fix=f"give more than 0 and at most {_MAX_DAYS} days (1 second to "
            f"{_MAX_DAYS * _DAY} s; decimals allowed, e.g. 0.5)",
        )
    return seconds


def platform(text: str) -> str:
    """argparse type: ``-p/--platform``, spelled as EC2 spells it (``windows`` -> ``Windows``)."""
    for known in PLATFORMS:
        if text.lower() == known.lower():
            return known
    return text  # passed through: EC2 decides


def add_expires_option(parser: Any) -> None:
    """``-x/--expires DAYS`` (the classic tools' -x), for every command that presigns URLs."""
    parser.add_argument(
        "-x",
        "--expires",
        type=expires_days,
        default=_MAX_DAYS * _DAY,
        metavar="DAYS",
        help=f"lifetime of the manifest's URLs in days, more than 0 and at most {_MAX_DAYS} "
        f"(SigV4's limit; the default); decimals allowed",
    )


def add_format_option(parser: Any, help: str) -> None:  # noqa: A002 - argparse's name
    """``-f/--format VMDK|VHD|RAW`` (case-insensitive; -f as in ec2-import-instance)."""
    parser.add_argument("-f", "--format", type=str.upper, choices=FORMATS, help=help)


def add_transfer_options(parser: Any) -> None:
    """--workers -x/--expires --bucket-owner --ignore-region-affinity (upload, resume,
    import-*)."""
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="parallel part uploads (default min(8, max(4, 2 x CPUs)); memory is "
        "about workers x part size)",
    )
    add_expires_option(parser)
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
    parser.add_argument(
        "--new-upload",
        action="store_true",
        help="upload a second copy even when IMAGE is uploaded already (the first one's record "
        "is kept beside the new one)",
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
        new_upload=args.new_upload,
        **more,
    )
