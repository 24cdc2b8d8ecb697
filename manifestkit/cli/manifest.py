"""``manifestkit manifest IMAGE --bucket B`` (offline) and ``manifestkit validate MANIFEST``.

``manifest`` writes the VM Import Manifest for an image that is (or will be) uploaded to
``s3://B/{prefix}/{uuid}/``: it inspects the image, plans the parts and presigns every URL
locally. It talks to neither S3 nor EC2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import sys
from typing import Any

from manifestkit.aws import make_session
from manifestkit.cli._arguments import add_expires_option, add_format_option
from manifestkit.cli._aws_options import add_aws_options, aws_settings_from
from manifestkit.cli._output import emit, plural
from manifestkit.errors import ImageError, NotImportableError, UsageError
from manifestkit.manifest import build_manifest_file, errors_only, validate_manifest, write_manifest
from manifestkit.manifest.model import SAMPLE_VALID_AT, samples_path
from manifestkit.parts import DEFAULT_PART_SIZE, PartPlan
from manifestkit.s3.bucket_names import validate_bucket_name
from manifestkit.s3.presign import ADDRESSING_STYLES, Presigner
from manifestkit.sizes import format_size, parse_size

log = logging.getLogger("manifestkit")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    _register_manifest(subparsers, common)
    _register_validate(subparsers, common)


def _register_manifest(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser(
        "manifest",
        parents=[common],
        description="Inspect IMAGE, cut it into parts and write the manifest whose presigned URLs "
        "point at s3://BUCKET/PREFIX/UUID/. Nothing is uploaded and no AWS API is called: the URLs "
        "are signed locally with the credentials of boto3's chain. The file is written with mode "
        "0600 (its URLs grant access to the parts). Exit 2 for bad options, an unreadable or "
        "non-importable image, or missing credentials.",
    )
    parser.add_argument("image", metavar="IMAGE", help="the disk image file")
    parser.add_argument("--bucket", "-b", required=True, help="the S3 bucket the parts go to")
    parser.add_argument("--prefix", default="", help="key prefix inside the bucket")
    parser.add_argument(
        "--part-size",
        default=str(DEFAULT_PART_SIZE),
        metavar="SIZE",
        help="part size: 10MiB, 10M or 10485760 (default 10 MiB)",
    )
    add_expires_option(parser)
    parser.add_argument(
        "--volume-size",
        "-s",
        type=int,
        metavar="GIB",
        help="EBS volume size in GiB (default and minimum: the smallest that holds both the disk's "
        "capacity and the image file)",
    )
    add_format_option(
        parser, help="the format you expect; a disagreement with the content is an error"
    )
    parser.add_argument(
        # no -o: that is --owner-akid in every command that has it (ec2-import-instance's -o)
        "--output-file",
        dest="output_file",
        metavar="FILE",
        help="where to write the manifest, '-' for stdout (default: <basename>manifest.xml here)",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace FILE if it exists (default: refuse)"
    )
    parser.add_argument(
        "--addressing-style",
        choices=ADDRESSING_STYLES,
        default="auto",
        help="S3 URL style: virtual-hosted, path, or auto (virtual on AWS, path elsewhere)",
    )
    parser.add_argument(
        "--upload-id",
        metavar="UUID",
        help="the folder name under PREFIX (default: a new random UUID)",
    )
    parser.add_argument(
        "--dont-verify-format",
        action="store_true",
        help="write the manifest even when the image is not importable as it is",
    )
    add_aws_options(parser, local=False, owner_short_options=False)
    parser.set_defaults(run=run_manifest)


class _DescriptionWrapped(argparse.RawDescriptionHelpFormatter):
    """The description wrapped as usual, the epilog as written (paths must not break at '-')."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def _register_validate(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    parser = subparsers.add_parser(
        "validate",
        parents=[common],
        description="Check MANIFEST ('-' for stdin) against the manifest schema and the semantic "
        "rules: part count, indices 0..n-1, contiguous byte ranges covering size, each URL's key, "
        "expiry (at most 7 days, not already past) and volume size. With --verify-signatures the "
        "signature of each URL is recomputed with boto3's credentials to prove its method "
        "(HEAD/GET/DELETE). Offline. Each finding is an error (an importer will fail: exit 2), "
        "a warning (AWS's text says otherwise but importers accept it: exit 0) or a note (what "
        "could not be checked); one line each.",
        epilog="Example, on the sample shipped with manifestkit (signed on 2026-01-01):\n"
        f"  manifestkit validate --at {SAMPLE_VALID_AT} {samples_path() / 'sample-manifest.xml'}",
        formatter_class=_DescriptionWrapped,
    )
    parser.add_argument(
        "manifest", metavar="MANIFEST", help="the manifest file, its URL, or - for stdin"
    )
    parser.add_argument(
        "--verify-signatures",
        action="store_true",
        help="recompute every URL's signature with the credentials of boto3's chain",
    )
    parser.add_argument(
        "--image",
        metavar="IMAGE",
        help="the image the manifest is for: check size against its file size and volume-size "
        "against its capacity",
    )
    parser.add_argument(
        "--at",
        metavar="TIME",
        type=_instant,
        help="check URL expiry as of TIME (ISO 8601, e.g. 2026-01-01T12:00:00Z; UTC when no "
        "offset is given) instead of now",
    )
    add_aws_options(parser, local=False, owner_short_options=False)
    parser.set_defaults(run=run_validate)


def _instant(text: str) -> dt.datetime:
    """``--at TIME``: ISO 8601 (``2026-01-01``, ``2026-01-01T12:00:00Z``, ``...+02:00``)."""
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO 8601 time (e.g. 2026-01-01T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.astimezone(dt.timezone.utc)


def _default_output(image: str) -> str:
    return f"{os.path.basename(image)}manifest.xml"


def _image_facts(args: argparse.Namespace) -> tuple[str, int, int]:
    """(format, file_bytes, capacity_bytes) of the image; refuses non-importable images."""
    from manifestkit.images import inspect_image

    try:
        info = inspect_image(args.image, format=args.format)
    except NotImportableError:
        if not args.dont_verify_format or not args.format:
            raise
        log.warning("%s: not importable as it is; writing the manifest anyway", args.image)
        size = os.stat(args.image).st_size
        return args.format, size, size
    if not info.importable:
        reasons = "; ".join(info.problems) or "EC2 would refuse it"
        if not args.dont_verify_format:
            raise NotImportableError(
                f"{args.image} cannot be imported as it is: {reasons}",
                fix="or pass --dont-verify-format to write the manifest anyway",
            )
        log.warning(
            "%s: %s (writing the manifest anyway: --dont-verify-format)", args.image, reasons
        )
    return args.format or info.format, info.file_bytes, info.capacity_bytes


def _check_output_path(target: str) -> None:
    """Refuse, before signing anything, an --output-file the atomic rename would fail on or
    replace wrongly (a folder, a device or pipe node, a folder that does not exist)."""
    if os.path.isdir(target):
        raise UsageError(
            f"{target}: is a folder",
            fix="give the manifest file's name, e.g. --output-file "
            f"{os.path.join(target, 'manifest.xml')}",
        )
    if os.path.exists(target) and not os.path.isfile(target):
        raise UsageError(f"{target}: is not a regular file", fix="give --output-file a file path")
    folder = os.path.dirname(os.path.abspath(target))
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise UsageError(f"{target}: {folder} is not a folder", fix="choose another --output-file")
    if not os.path.isdir(folder):
        raise UsageError(
            f"{target}: the folder {folder} does not exist",
            fix="create it or choose another --output-file",
        )


def run_manifest(args: argparse.Namespace) -> int:
    validate_bucket_name(args.bucket)
    expires_in = args.expires
    part_size = parse_size(args.part_size)
    to_stdout = args.output_file == "-"
    if to_stdout and args.output == "json":
        raise UsageError(
            "--output-file - and --output json both want stdout",
            fix="give --output-file FILE with --output json",
        )
    file_format, file_bytes, capacity = _image_facts(args)
    plan = PartPlan.for_file(
        args.image, file_bytes, part_size=part_size, prefix=args.prefix, upload_id=args.upload_id
    )
    target = None if to_stdout else (args.output_file or _default_output(args.image))
    if target is not None and os.path.exists(target) and os.path.samefile(target, args.image):
        raise UsageError(f"{target} is the image itself", fix="give --output-file another file")
    if target is not None:
        _check_output_path(target)
    if target is not None and os.path.lexists(target) and not args.force:
        raise UsageError(
            f"{target} already exists",
            fix="pass --force to replace it, or --output-file another file",
        )
    volume_gib = args.volume_size
    if volume_gib is None:
        from manifestkit.images.rules import volume_gib_for

        volume_gib = volume_gib_for(capacity, file_bytes)

    settings = dataclasses.replace(aws_settings_from(args), addressing_style=args.addressing_style)
    session = make_session(settings)
    presigner = Presigner.from_session(session, settings, expires_in=expires_in)
    build = dict(
        plan=plan,
        file_format=file_format,
        bucket=args.bucket,
        presigner=presigner,
        volume_gib=volume_gib,
        capacity_bytes=capacity,
    )
    if to_stdout:
        write_manifest(sys.stdout.buffer, **build)  # type: ignore[arg-type]
        sys.stdout.buffer.flush()
        return 0
    assert target is not None
    try:
        build_manifest_file(target, **build)  # type: ignore[arg-type]
    except OSError as exc:
        raise UsageError(
            f"{target}: cannot write the manifest: {exc.strerror or exc}",
            fix="choose a folder you can write to with --output-file",
        ) from exc
    log.debug("self-destruct URL: %s", presigner.url("DELETE", args.bucket, plan.manifest_key))
    doc: dict[str, Any] = {
        "manifest": os.path.abspath(target),
        "image": args.image,
        "format": file_format,
        "file_bytes": file_bytes,
        "volume_gib": volume_gib,
        "bucket": args.bucket,
        "manifest_key": plan.manifest_key,
        "key_prefix": plan.key_prefix,
        "part_size": plan.part_size,
        "part_count": plan.count,
        "region": presigner.region,
        "signed_at": presigner.signed_at.isoformat(),
        "expires_at": presigner.expires_at.isoformat(),
    }
    text = (
        f"wrote {target}: {plural(plan.count, 'part')} of {format_size(plan.part_size)} for "
        f"s3://{args.bucket}/{plan.key_prefix}, volume {volume_gib} GiB; "
        f"URLs expire {presigner.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    emit(args, doc, text)
    return 0


def run_validate(args: argparse.Namespace) -> int:
    source: Any = sys.stdin.buffer if args.manifest == "-" else args.manifest
    credentials = None
    if args.verify_signatures:
        from manifestkit.aws import frozen_credentials

        credentials = frozen_credentials(make_session(aws_settings_from(args)))
    capacity = file_bytes = None
    if args.image:
        from manifestkit.images import inspect_image

        try:
            info = inspect_image(args.image)
            capacity, file_bytes = info.capacity_bytes, info.file_bytes
        except ImageError as exc:
            raise UsageError(f"--image: {exc}") from exc
    now = args.at or dt.datetime.now(dt.timezone.utc)
    from manifestkit.s3.url_policy import UrlPolicy
    from manifestkit.workflow.manifest_source import is_url, local_manifest

    # URLs pointing anywhere but AWS and the configured endpoint are problems (SECURITY.md);
    # a manifest given by URL is fetched within the same bounds as verify's
    policy = UrlPolicy.from_settings(aws_settings_from(args))
    with contextlib.ExitStack() as stack:
        if isinstance(source, str) and is_url(source):
            source = stack.enter_context(local_manifest(source, policy=policy))
        problems = validate_manifest(
            source,
            credentials=credentials,
            now=now,
            capacity_bytes=capacity,
            file_bytes=file_bytes,
            url_policy=policy,
        )
    errors = errors_only(problems)
    warnings = [p for p in problems if p.severity == "warning"]
    name = args.manifest
    if args.output == "json":
        doc = {
            "manifest": name,
            "valid": not errors,
            "errors": len(errors),
            "warnings": len(warnings),
            "checked_at": now.isoformat(),
            "problems": [p.to_dict() for p in problems],
        }
        emit(args, doc, "")
    else:
        lines = [f"{name}: {p.severity}: {p}" for p in problems]
        if not errors:
            n = len(warnings)
            lines.append(f"{name}: valid" + (f" ({n} warning{'s' * (n != 1)})" if n else ""))
        emit(args, None, "\n".join(lines))
    return 2 if errors else 0


__all__ = ["register", "run_manifest", "run_validate"]
