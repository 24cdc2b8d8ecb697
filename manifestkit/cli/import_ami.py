"""``manifestkit import-ami IMAGE --name NAME``: from a disk image to a launchable AMI.

Inspect (and ``--convert``), upload as ``manifestkit upload`` does, ImportVolume, snapshot,
RegisterImage, and optionally copy into other regions and share. The RegisterImage options are
named as ``aws ec2 register-image`` names them. Stopped anywhere (Ctrl-C, a crash), the same
command continues from the journal; a failure removes what the run created unless
``--keep-on-failure``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from manifestkit.cli._arguments import (
    add_format_option,
    add_upload_options,
    positive_int,
    upload_request_from,
)
from manifestkit.cli._aws_options import add_aws_options, aws_settings_for
from manifestkit.cli._output import emit, progress_for
from manifestkit.cli.tasks import add_interval_option, poll_interval
from manifestkit.ec2_images import (
    ARCHITECTURES,
    BOOT_MODES,
    DEFAULT_ROOT_DEVICE,
    DEFAULT_VOLUME_TYPE,
    VOLUME_TYPES,
)
from manifestkit.errors import UsageError

if TYPE_CHECKING:
    from manifestkit.workflow.ami import AmiRequest, AmiResult

#: with --local the sandbox is fresh each time: this bucket is created on the fly
LOCAL_BUCKET = "manifestkit-local"


def _tag(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--tag {text!r} is not KEY=VALUE")
    return key, value


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "import-ami",
        parents=[common],
        help="upload an image and make it an AMI (ImportVolume, snapshot, RegisterImage)",
        description="Inspect IMAGE, upload it, import it as a volume, snapshot it and register "
        "the snapshot as an AMI (hvm); optionally copy it to other regions and share it. The "
        "way for Linux, BSD and every other OS that is not Windows. Run the same command again "
        "to continue a stopped run.",
    )
    parser.add_argument(
        "image", metavar="IMAGE", help="the disk image file (RAW, VHD, streamOptimized VMDK)"
    )
    parser.add_argument("--name", required=True, help="the AMI's name (3-128 characters)")
    add_format_option(parser, help="the image's format (checked against its content)")
    parser.add_argument(
        "-z",
        "--availability-zone",
        metavar="ZONE",
        help="where ImportVolume creates the volume (default: the region's first available zone)",
    )
    image = parser.add_argument_group("the AMI (as aws ec2 register-image names them)")
    image.add_argument("--architecture", choices=ARCHITECTURES, default="x86_64")
    image.add_argument("--boot-mode", choices=BOOT_MODES)
    image.add_argument("--ena-support", action="store_true", help="enhanced networking (ENA)")
    image.add_argument("--sriov-net-support", choices=("simple",))
    image.add_argument(
        "--root-device-name",
        default=DEFAULT_ROOT_DEVICE,
        help=f"default {DEFAULT_ROOT_DEVICE}",
    )
    image.add_argument("--volume-type", choices=VOLUME_TYPES, default=DEFAULT_VOLUME_TYPE)
    image.add_argument(
        "--volume-size",
        type=positive_int,
        metavar="GIB",
        help="root volume size (default: the imported volume's, at least the snapshot's)",
    )
    image.add_argument("--imds-support", choices=("v2.0",), help="require IMDSv2")
    image.add_argument("--tpm-support", choices=("v2.0",), help="NitroTPM (needs --boot-mode uefi)")
    image.add_argument("--description")
    image.add_argument(
        "--tag",
        type=_tag,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="tag the AMI, its snapshots and (while it lives) the volume; repeatable",
    )
    share = parser.add_argument_group("copies and sharing")
    share.add_argument(
        "--copy-to",
        nargs="+",
        action="extend",
        default=[],
        metavar="REGION",
        help="copy the AMI into these regions ('all': every region enabled for the account)",
    )
    share.add_argument(
        "--public", action="store_true", help="launch permission for everyone, in every region"
    )
    share.add_argument(
        "--share-with",
        nargs="+",
        action="extend",
        default=[],
        metavar="ACCOUNT",
        help="launch permission for these account ids",
    )
    run = parser.add_argument_group("cleanup")
    run.add_argument(
        "--keep-upload", action="store_true", help="keep the uploaded parts and manifest"
    )
    run.add_argument(
        "--keep-on-failure",
        action="store_true",
        help="on failure keep what was created (the journal records it) instead of removing it",
    )
    add_interval_option(parser)
    group = parser.add_argument_group("upload (as manifestkit upload)")
    add_upload_options(
        group, bucket_help="S3 bucket for the parts and manifest (with --local: manifestkit-local)"
    )
    add_aws_options(parser)
    parser.set_defaults(run=run_import_ami)


def request_from(args: argparse.Namespace) -> AmiRequest:
    from manifestkit.workflow.ami import AmiRequest

    bucket = args.bucket or (LOCAL_BUCKET if args.local else None)
    if not bucket:
        raise UsageError(
            "no bucket given", fix="pass -b/--bucket BUCKET (or --local to try offline)"
        )
    # --volume-size is the AMI's; the imported volume follows the image
    upload = upload_request_from(
        argparse.Namespace(**{**vars(args), "volume_size": None}), bucket=bucket
    )
    return AmiRequest(
        upload=upload,
        name=args.name,
        availability_zone=args.availability_zone,
        architecture=args.architecture,
        boot_mode=args.boot_mode,
        ena_support=args.ena_support,
        sriov_net_support=args.sriov_net_support,
        root_device_name=args.root_device_name,
        volume_type=args.volume_type,
        volume_gib=args.volume_size,
        imds_support=args.imds_support,
        tpm_support=args.tpm_support,
        description=args.description,
        tags=tuple(args.tag),
        copy_to=tuple(args.copy_to),
        public=args.public,
        share_with=tuple(args.share_with),
        keep_upload=args.keep_upload,
        keep_on_failure=args.keep_on_failure,
        record_journal=not args.local,
    )


def _text(result: AmiResult) -> str:
    lines = [
        f"{image.image_id}\t{' '.join(image.snapshot_ids)}\t{image.region}"
        for image in result.images
    ]
    return "\n".join(lines)


def _continue_command(args: argparse.Namespace) -> str:
    words = ["manifestkit", "import-ami", args.image, "--name", args.name]
    for flag, value in (
        ("--region", args.region),
        ("--profile", args.profile),
        ("--state-dir", args.state_dir),
    ):
        if value:
            words += [flag, value]
    return shlex.join(words) + " (with the same options)"


def run_import_ami(args: argparse.Namespace) -> int:
    from manifestkit.ec2 import WaitSettings
    from manifestkit.workflow.ami import checkpoint_from_env, import_ami

    request = request_from(args)  # bad input fails here, before anything starts
    checkpoint = checkpoint_from_env()

    def notify(line: str) -> None:
        if not args.quiet:
            tqdm.write(f"manifestkit: {line}", file=sys.stderr)

    try:
        with aws_settings_for(args) as settings:
            result = import_ami(
                request,
                settings,
                wait=WaitSettings(interval=poll_interval(args, settings)),
                progress=progress_for(args),
                notify=notify,
                checkpoint=checkpoint,
            )
    except KeyboardInterrupt as stop:
        # Ctrl-C, or SIGTERM/SIGHUP (manifestkit.termination.Terminated: exit 128 + signal)
        name = getattr(stop, "name", None)
        what = f"terminated ({name})" if name else "interrupted"
        if args.local:
            print(f"manifestkit: {what} (the --local sandbox is gone with it)", file=sys.stderr)
        else:
            print(
                f"manifestkit: {what}; nothing was removed. Continue with: "
                + _continue_command(args),
                file=sys.stderr,
            )
        return int(getattr(stop, "exit_code", 130))
    emit(args, result.to_dict(), _text(result))
    return 0
