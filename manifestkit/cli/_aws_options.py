"""AWS options shared by the commands that talk to AWS, with the classic EC2 API tools' names."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from manifestkit.aws import AwsSettings


def add_aws_options(
    parser: argparse.ArgumentParser, *, local: bool = True, owner_short_options: bool = True
) -> None:
    """``local=False`` leaves out ``--local``; ``owner_short_options=False`` leaves out
    ``-o``/``-w`` (for commands where ``-o`` means the output file, as in ``manifest``)."""
    group = parser.add_argument_group(
        "AWS (defaults come from boto3's chain: AWS_PROFILE, config files)"
    )
    group.add_argument("--region", help="AWS region (default: boto3's configured region)")
    group.add_argument("--profile", help="named profile from ~/.aws/config")
    group.add_argument(
        "--s3-endpoint-url", help="S3 endpoint (default: AWS_ENDPOINT_URL_S3 or AWS)"
    )
    group.add_argument(
        "--ec2-endpoint-url",
        "-U",
        "--url",
        dest="ec2_endpoint_url",
        help="EC2 endpoint (default: AWS_ENDPOINT_URL_EC2 or AWS)",
    )
    group.add_argument(
        *(
            ("-O", "--aws-access-key", "-o", "--owner-akid")
            if owner_short_options
            else ("-O", "--aws-access-key", "--owner-akid")
        ),
        dest="access_key",
        help="access key id (classic option; prefer profiles)",
    )
    group.add_argument(
        *(
            ("-W", "--aws-secret-key", "-w", "--owner-sak")
            if owner_short_options
            else ("-W", "--aws-secret-key", "--owner-sak")
        ),
        dest="secret_key",
        help="secret access key (classic option; prefer profiles)",
    )
    if local:
        group.add_argument(
            "--local",
            action="store_true",
            help="run against an embedded offline sandbox (S3 + import endpoint on loopback)",
        )


def aws_settings_from(args: argparse.Namespace) -> AwsSettings:
    return AwsSettings(
        profile=args.profile,
        region=args.region,
        s3_endpoint_url=args.s3_endpoint_url,
        ec2_endpoint_url=args.ec2_endpoint_url,
        access_key=args.access_key,
        secret_key=args.secret_key,
    )


@contextmanager
def aws_settings_for(args: argparse.Namespace) -> Iterator[AwsSettings]:
    """The settings a command runs with; with ``--local``, an embedded sandbox for this command."""
    if not getattr(args, "local", False):
        yield aws_settings_from(args)
        return
    from manifestkit.sandbox import Sandbox  # needs the [sandbox] extra; imported only here

    with Sandbox(region=args.region or "us-east-1") as sandbox:
        yield sandbox.aws_settings()
