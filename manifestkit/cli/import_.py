"""``manifestkit import-instance IMAGE`` and ``manifestkit import-volume IMAGE -z ZONE``.

Inspect (and ``--convert``), upload as ``manifestkit upload`` does, call ImportInstance /
ImportVolume, and with ``--wait`` follow the task to its end. The classic ``ec2-import-instance``
/ ``ec2-import-volume`` option names are accepted.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from manifestkit.cli._arguments import (
    add_format_option,
    add_upload_options,
    platform,
    positive_int,
    upload_request_from,
)
from manifestkit.cli._aws_options import (
    LOCAL_HELP,
    add_aws_options,
    aws_settings_for,
    check_local_options,
)
from manifestkit.cli._output import emit, progress_for
from manifestkit.cli.tasks import (
    ChangeFilter,
    add_interval_option,
    format_change,
    format_task,
    poll_interval,
)
from manifestkit.cli.upload import _resume_command, unfinished_upload_recorded
from manifestkit.ec2 import SHUTDOWN_BEHAVIORS, ConversionTask, LaunchSpec, WaitSettings
from manifestkit.errors import ManifestkitError, UsageError

if TYPE_CHECKING:
    from manifestkit.aws import AwsSettings
    from manifestkit.workflow.upload import UploadRequest

log = logging.getLogger("manifestkit")

#: ImportInstanceRequest or ImportVolumeRequest
Request = TypeVar("Request")

#: with --local the sandbox is fresh each time: this bucket is created on the fly
LOCAL_BUCKET = "manifestkit-local"


def _add_upload_options(parser: argparse.ArgumentParser) -> None:
    """The upload options of ``manifestkit upload``, with the classic import tools' short names."""
    group = parser.add_argument_group("upload (as manifestkit upload)")
    add_upload_options(
        group, bucket_help="S3 bucket for the parts and manifest (with --local: manifestkit-local)"
    )


def _common_import_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "image", metavar="IMAGE", nargs="?", help="the disk image file (not with --manifest-url)"
    )
    add_format_option(
        parser,
        help="the image's format (checked against its content unless --dont-verify-format)",
    )
    parser.add_argument(
        "-s",
        "--volume-size",
        type=positive_int,
        metavar="GIB",
        help="volume size in GiB (default and minimum: holds both the disk and the image file)",
    )
    parser.add_argument("-d", "--description", help="description of the import")
    parser.add_argument(
        "--manifest-url", metavar="URL", help="import an already uploaded manifest (no upload)"
    )
    parser.add_argument(
        "--no-upload",
        action="store_true",
        help="put the manifest and create the task, but send the parts later (manifestkit resume)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="ask EC2 whether the call would be allowed (its DryRun); uploads nothing",
    )
    parser.add_argument(
        "--wait",
        action="store_true",
        help="follow the task until it is completed or cancelled (always, with --local)",
    )
    add_interval_option(parser)
    _add_upload_options(parser)
    # the embedded sandbox, and the task in it, end with the command: waiting is all there is
    add_aws_options(parser, local_help=LOCAL_HELP + "; implies --wait")


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    instance = subparsers.add_parser(
        "import-instance",
        parents=[common],
        description="Inspect IMAGE, upload it in verified parts with its manifest, and start an "
        "ImportInstance conversion task; --wait follows it to the end.",
    )
    instance.add_argument(
        "-p",
        "--platform",
        required=True,
        type=platform,
        metavar="PLATFORM",
        help="the instance's OS: Windows (the value EC2 documents) or Linux; any case",
    )
    instance.add_argument(
        "-t", "--instance-type", help="instance type (passed through; EC2 decides)"
    )
    instance.add_argument(
        "-a", "--architecture", help="i386 | x86_64 | arm64 (default: EC2's, x86_64)"
    )
    instance.add_argument(
        "-z", "--availability-zone", metavar="ZONE", help="the zone to create the instance in"
    )
    instance.add_argument(
        "-g",
        "--group",
        action="append",
        default=[],
        metavar="GROUP",
        help="security group name, or id (sg-...); repeatable",
    )
    instance.add_argument("--subnet", metavar="SUBNET", help="VPC subnet id")
    instance.add_argument(
        "--private-ip-address", metavar="ADDRESS", help="primary private IP (VPC)"
    )
    instance.add_argument(
        "--monitor", action="store_true", default=None, help="enable detailed monitoring"
    )
    instance.add_argument(
        "--instance-initiated-shutdown-behavior",
        choices=SHUTDOWN_BEHAVIORS,
        help="what a shutdown from inside the instance does",
    )
    user_data = instance.add_mutually_exclusive_group()
    user_data.add_argument("--user-data", metavar="TEXT", help="user data (text; sent base64)")
    user_data.add_argument(
        "--user-data-file", metavar="FILE", help="file holding the user data (sent base64)"
    )
    instance.add_argument(
        "--additional-info", metavar="TEXT", help="LaunchSpecification.AdditionalInfo"
    )
    _common_import_options(instance)
    instance.set_defaults(run=run_import_instance)

    volume = subparsers.add_parser(
        "import-volume",
        parents=[common],
        description="Inspect IMAGE, upload it in verified parts with its manifest, and start an "
        "ImportVolume conversion task in ZONE; --wait follows it to the end.",
    )
    volume.add_argument(
        "-z",
        "--availability-zone",
        required=True,
        metavar="ZONE",
        help="the zone to create the volume in (required)",
    )
    _common_import_options(volume)
    volume.set_defaults(run=run_import_volume)


# --------------------------------------------------------------------------- building requests


def _read_user_data(args: argparse.Namespace) -> bytes | None:
    if args.user_data is not None:
        return args.user_data.encode("utf-8")
    if args.user_data_file is None:
        return None
    try:
        with open(args.user_data_file, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(
            f"cannot read --user-data-file {args.user_data_file}: {exc.strerror}",
            fix="check the path and permissions",
        ) from exc


def launch_spec_from(args: argparse.Namespace) -> LaunchSpec:
    groups = [g.strip() for value in args.group for g in value.split(",") if g.strip()]
    return LaunchSpec(
        architecture=args.architecture,
        instance_type=args.instance_type,
        group_names=tuple(g for g in groups if not g.startswith("sg-")),
        group_ids=tuple(g for g in groups if g.startswith("sg-")),
        subnet_id=args.subnet,
        private_ip_address=args.private_ip_address,
        availability_zone=args.availability_zone,
        monitoring=args.monitor,
        shutdown_behavior=args.instance_initiated_shutdown_behavior,
        user_data=_read_user_data(args),
        additional_info=args.additional_info,
    )


def _upload_request(args: argparse.Namespace) -> UploadRequest | None:
    """The ``UploadRequest`` for IMAGE, or None with ``--manifest-url``."""
    if args.manifest_url:
        if args.image:
            raise UsageError(
                "give IMAGE or --manifest-url, not both",
                fix="--manifest-url imports what is already uploaded",
            )
        if args.no_upload:
            raise UsageError("--no-upload and --manifest-url do not go together")
        if args.local:
            raise UsageError(
                "--manifest-url cannot be used with --local (each --local run has its own "
                "fresh sandbox)",
                fix="run the whole import with --local, or use a sandbox from manifestkit sandbox",
            )
        return None
    if not args.image:
        raise UsageError("no image given", fix="pass IMAGE, or --manifest-url URL")
    bucket = args.bucket
    if args.local and not bucket:
        bucket = LOCAL_BUCKET
    if not bucket:
        raise UsageError(
            "no bucket given", fix="pass -b/--bucket BUCKET (or --local to try offline)"
        )
    if args.local and args.no_upload:
        raise UsageError(
            "--no-upload cannot be used with --local (the sandbox is gone when the command ends)"
        )
    return upload_request_from(args, bucket=bucket)


# --------------------------------------------------------------------------- running


def _report_task(args: argparse.Namespace, task: ConversionTask, extra: dict[str, Any]) -> None:
    emit(args, {"task": task.to_dict(), **extra}, format_task(task))


def _dry_run_result(args: argparse.Namespace, action: str, allowed: bool) -> int:
    text = (
        f"dry run: {action} would have been allowed (DryRunOperation); nothing was uploaded"
        if allowed
        else f"dry run: {action} would NOT be allowed (UnauthorizedOperation); nothing was uploaded"
    )
    emit(args, {"dry_run": True, "action": action, "allowed": allowed}, text)
    return 0 if allowed else 1


def _interrupted(args: argparse.Namespace, task_id: str | None) -> int:
    hint = _resume_command(args) if args.image else ""
    message = "manifestkit: interrupted"
    if task_id and not args.local:
        message += (
            f"; conversion task {task_id} goes on in EC2: follow it with manifestkit tasks "
            f"{task_id} --watch, or stop it with manifestkit cancel {task_id}"
        )
    elif hint and not args.local and unfinished_upload_recorded(args.image, args.state_dir):
        message += (
            f"; parts already sent are kept. Finish the upload with:\n  {hint}\n"
            "then import with --manifest-url URL, or clean up with manifestkit delete URL"
        )
    print(message, file=sys.stderr)
    return 130


def _on_update_printer(
    args: argparse.Namespace, seen: dict[str, str]
) -> Callable[[ConversionTask], None]:
    """State changes while waiting: a line each on stderr (unless quiet); remembers the task id."""
    from tqdm import tqdm

    bar_shown = not args.quiet and sys.stderr.isatty()  # TqdmProgress draws bytes converted
    news = ChangeFilter(progress_steps=not bar_shown)

    def show(task: ConversionTask) -> None:
        seen["task_id"] = task.id
        if news(task) and not args.quiet:
            tqdm.write(format_change(task), file=sys.stderr)  # above the progress bar, if any

    return show


def _run(
    args: argparse.Namespace,
    action: str,
    build: Callable[[argparse.Namespace], Request],
    start: Callable[..., ConversionTask],
    check: Callable[[Request, AwsSettings], bool],
) -> int:
    check_local_options(args)
    request = build(args)  # bad input fails here, before anything starts
    if args.local and not args.wait and not args.dry_run:
        # the task lives in the embedded sandbox, which ends with this command
        args.wait = True
        log.info("--local: waiting for the task (the sandbox ends with this command)")
    seen: dict[str, str] = {}
    try:
        with aws_settings_for(args) as settings:
            if args.dry_run:
                return _dry_run_result(args, action, check(request, settings))
            wait: bool | WaitSettings = False
            if args.wait:
                wait = WaitSettings(interval=poll_interval(args, settings))
            task = start(
                request,
                settings,
                wait=wait,
                progress=progress_for(args),
                on_update=_on_update_printer(args, seen) if args.wait else None,
                notify=log.warning,
                check=False,
            )
    except KeyboardInterrupt:
        return _interrupted(args, seen.get("task_id"))
    except ManifestkitError as exc:
        url = getattr(exc, "manifest_url", None)
        if url and args.output != "json":
            # what the upload produced, on stdout as manifestkit upload prints it (with --output
            # json, the entry point's error document carries it)
            emit(args, {}, url)
        raise
    extra: dict[str, Any] = {}
    if args.no_upload and args.image:
        # stdout is where the command's result (and so a bearer URL) may go; stderr names none
        extra["next"] = shlex.join(
            ["manifestkit", "resume", task.manifest_url or "URL", args.image]
        )
        log.warning(
            "the parts are not uploaded yet; send them with: %s (or manifestkit resume "
            "MANIFEST_URL IMAGE)",
            _resume_command(args),
        )
    _report_task(args, task, extra)
    if args.wait and not task.succeeded:
        print(
            f"manifestkit: error: conversion task {task.id} ended {task.state}: "
            f"{task.status_message or 'no status message'}",
            file=sys.stderr,
        )
        return 1
    if not args.wait and not args.local:
        log.info("follow it with: manifestkit tasks %s --watch", task.id)
    return 0


def run_import_instance(args: argparse.Namespace) -> int:
    from manifestkit.workflow import ImportInstanceRequest, check_import_instance, import_instance

    def build(a: argparse.Namespace) -> ImportInstanceRequest:
        return ImportInstanceRequest(
            upload=_upload_request(a),
            manifest_url=a.manifest_url,
            platform=a.platform,
            launch=launch_spec_from(a),
            description=a.description,
            volume_gib=a.volume_size,
            no_upload=a.no_upload,
        )

    def check(request: ImportInstanceRequest, settings: AwsSettings) -> bool:
        return check_import_instance(request, settings, notify=log.warning)

    return _run(args, "ImportInstance", build, import_instance, check)


def run_import_volume(args: argparse.Namespace) -> int:
    from manifestkit.workflow import ImportVolumeRequest, check_import_volume, import_volume

    def build(a: argparse.Namespace) -> ImportVolumeRequest:
        return ImportVolumeRequest(
            availability_zone=a.availability_zone,
            upload=_upload_request(a),
            manifest_url=a.manifest_url,
            description=a.description,
            volume_gib=a.volume_size,
            no_upload=a.no_upload,
        )

    return _run(args, "ImportVolume", build, import_volume, check_import_volume)
