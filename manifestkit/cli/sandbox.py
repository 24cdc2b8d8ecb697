"""``manifestkit sandbox``: run the offline sandbox (S3 + EC2 import endpoint) in the foreground.

Prints the ``export`` lines that point boto3, the AWS CLI and manifestkit at it, then serves until
Ctrl-C or SIGTERM (exit 0).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import threading
from types import FrameType
from typing import Any

from manifestkit.cli._output import emit

log = logging.getLogger("manifestkit")

#: variables that would send boto3 elsewhere (or sign with a token the sandbox never issued)
UNSET = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        parents=[common],
        description="Serve moto's S3 and EC2, behind the signature, method and expiry checks real "
        "S3 makes, plus the ImportInstance/ImportVolume endpoint, on one loopback port. Prints "
        "the environment variables to export, then runs until Ctrl-C. Credentials are throwaway "
        "(testing/testing unless given); state lives in memory and is gone when it stops.",
    )
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default 127.0.0.1; anything but loopback exposes the sandbox "
        "and its throwaway credentials to the network)",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    parser.add_argument("--region", default="us-east-1", help="default region (default us-east-1)")
    parser.add_argument(
        "--access-key", default="testing", help="access key id it accepts (default testing)"
    )
    parser.add_argument(
        "--secret-key", default="testing", help="secret access key it accepts (default testing)"
    )
    parser.set_defaults(run=run)


def exports_text(env: dict[str, str]) -> str:
    lines = [f"unset {' '.join(UNSET)}"]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in env.items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from manifestkit.cli._aws_options import forget_user_aws_config
    from manifestkit.errors import UsageError

    forget_user_aws_config()  # the sandbox is not AWS: a profile set for AWS must not break it
    from manifestkit.sandbox import Sandbox
    from manifestkit.sandbox.server import is_loopback

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number", fix="use 0-65535 (0: any)")
    host = args.host or "127.0.0.1"
    sandbox = Sandbox(
        args.region,
        host=host,
        port=args.port,
        access_key=args.access_key,
        secret_key=args.secret_key,
        allow_remote=args.host is not None,
    )
    if not is_loopback(host):
        log.warning(
            "listening on %s: anyone who can reach it can use the sandbox with its credentials",
            host,
        )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with sandbox:
            env = sandbox.env()
            document: dict[str, Any] = {
                "endpoint_url": sandbox.endpoint_url,
                "region": sandbox.region,
                "control_url": sandbox.control_url,
                "env": env,
                "unset": list(UNSET),
            }
            emit(args, document, exports_text(env))
            log.info(
                "sandbox serving S3 and EC2 on %s (clock: %sclock); Ctrl-C to stop",
                sandbox.endpoint_url,
                sandbox.control_url,
            )
            while not stop.wait(0.5):
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("sandbox stopped")
    return 0
