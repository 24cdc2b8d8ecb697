"""AWS options shared by the commands that talk to AWS, with the classic EC2 API tools' names."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from manifestkit.aws import AwsSettings
from manifestkit.errors import UsageError

#: what ``--local`` says in ``--help`` (the sandbox lives only as long as the command)
LOCAL_HELP = (
    "run against an embedded offline sandbox (S3 + import endpoint on loopback) that lives only "
    "as long as this command; reads none of your AWS configuration"
)

#: options that choose where and as whom to call AWS: --local chooses all of that itself
_NOT_WITH_LOCAL = (
    ("profile", "--profile"),
    ("access_key", "-O/--aws-access-key"),
    ("secret_key", "-W/--aws-secret-key"),
    ("security_token", "-T/--security-token"),
    ("s3_endpoint_url", "--s3-endpoint-url"),
    ("ec2_endpoint_url", "-U/--ec2-endpoint-url"),
)


def add_aws_options(
    parser: argparse.ArgumentParser,
    *,
    local: bool = True,
    local_help: str = LOCAL_HELP,
    owner_short_options: bool = True,
) -> None:
    """``local=False`` leaves out ``--local``; ``owner_short_options=False`` leaves out
    ``-o``/``-w`` (the classic tools' --owner-akid/--owner-sak), for commands that call no AWS
    API and sign with the keys given (``manifest``, ``validate``)."""
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
    group.add_argument(
        "-T",
        "--security-token",
        dest="security_token",
        metavar="TOKEN",
        help="session token of temporary credentials (classic option; prefer profiles)",
    )
    if local:
        group.add_argument("--local", action="store_true", help=local_help)


def add_refused_local_option(parser: argparse.ArgumentParser) -> None:
    """``--local`` on a command that only reads what another run created: accepted, to say what
    to do instead (a --local sandbox is gone with the command that started it)."""
    parser.add_argument(
        "--local",
        action="store_true",
        help="not useful here: a --local sandbox ends with its command, so it holds no task; "
        "run manifestkit sandbox and export the lines it prints instead",
    )


def refuse_local(args: argparse.Namespace, command: str) -> None:
    if getattr(args, "local", False):
        raise UsageError(
            f"{command} --local would look into a new, empty sandbox: a --local sandbox ends "
            "with the command that started it, taking its tasks with it",
            fix="run manifestkit sandbox in another terminal, paste the export lines it prints, "
            f"then run the import and manifestkit {command} without --local",
        )


def _warn_secret_on_command_line(args: argparse.Namespace) -> None:
    """A secret in argv is readable by every local user (ps, /proc/PID/cmdline): say so, once."""
    given = [
        flag
        for dest, flag in (
            ("secret_key", "-W/--aws-secret-key"),
            ("security_token", "-T/--security-token"),
        )
        if getattr(args, dest, None)
    ]
    if given and not getattr(args, "_warned_secret", False):
        args._warned_secret = True
        logging.getLogger("manifestkit").warning(
            "%s on the command line is visible to other users in the process list; set "
            "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN) in the environment or use a profile "
            "(--profile) instead",
            " and ".join(given),
        )


def aws_settings_from(args: argparse.Namespace) -> AwsSettings:
    _warn_secret_on_command_line(args)
    return AwsSettings(
        profile=args.profile,
        region=args.region,
        s3_endpoint_url=args.s3_endpoint_url,
        ec2_endpoint_url=args.ec2_endpoint_url,
        access_key=args.access_key,
        secret_key=args.secret_key,
        session_token=getattr(args, "security_token", None),
    )


def check_local_options(args: argparse.Namespace) -> None:
    """--local brings its own endpoints and throwaway credentials: an option that names others
    would be silently ignored, so it is refused."""
    given = [flag for dest, flag in _NOT_WITH_LOCAL if getattr(args, dest, None)]
    if getattr(args, "local", False) and given:
        raise UsageError(
            f"{' and '.join(given)} cannot be used with --local (the embedded sandbox has its "
            "own endpoints and throwaway credentials and reads none of your AWS configuration)",
            fix=f"leave out {' and '.join(given)}, or drop --local to use AWS",
        )


#: the environment through which boto3 (and moto, in the embedded sandbox) read the user's AWS
#: configuration: profile names and the files that define them
_USER_CONFIG_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE")
_USER_CONFIG_FILES = ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


def forget_user_aws_config() -> None:
    """Make this process read none of the user's AWS configuration (for --local and the sandbox
    command: moto builds boto3 sessions of its own while it loads, and a profile that does not
    exist would break them). Only for a command's own process: it changes ``os.environ``."""
    for name in _USER_CONFIG_ENV:
        os.environ.pop(name, None)
    for name in _USER_CONFIG_FILES:
        os.environ[name] = os.devnull


@contextmanager
def aws_settings_for(args: argparse.Namespace) -> Iterator[AwsSettings]:
    """The settings a command runs with; with ``--local``, an embedded sandbox for this command."""
    if not getattr(args, "local", False):
        yield aws_settings_from(args)
        return
    check_local_options(args)
    forget_user_aws_config()
    from manifestkit.sandbox import Sandbox  # needs the [sandbox] extra; imported only here

    with Sandbox(region=args.region or "us-east-1") as sandbox:
        yield sandbox.aws_settings()
