"""Command-line entry point: parse, call the library, print, map errors to exit codes.

Exit codes and the one-line error format are design.md §2's.

Each command lives in its own module under ``manifestkit.cli`` and exposes
``register(subparsers, common)``; it sets ``run=<function(args) -> int>`` as the parser default.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from manifestkit import __version__
from manifestkit.errors import ManifestkitError

#: command modules, in the order ``--help`` lists them (the pipeline's order)
COMMAND_MODULES = (
    "inspect",
    "convert",
    "manifest",
    "upload",
    "verify",
    "delete",
    "import_",
    "import_ami",
    "tasks",
    "sandbox",
)

log = logging.getLogger("manifestkit")


def common_options(*, defaults: bool = True) -> argparse.ArgumentParser:
    """Options every command takes, before the command name and after it too.

    The copy given to the commands has no defaults (``defaults=False``): argparse copies every
    attribute of a command's namespace over the main one, so a default there would undo
    ``manifestkit --debug inspect X``.
    """

    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=default(False),
        help="log details (incl. presigned URLs) and show tracebacks",
    )
    common.add_argument(
        "--output",
        choices=("text", "json"),
        default=default("text"),
        help="text for people, json for scripts",
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="no progress bars"
    )
    return common


class _Parser(argparse.ArgumentParser):
    """argparse with design.md §2's error line: one line on stderr, exit 2, pointing at --help."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        self._seen = list(sys.argv[1:] if args is None else args)  # for error()'s hint
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        # a file whose name starts with '-' is taken for an option: say how to pass it
        dashed = [a for a in getattr(self, "_seen", ()) if a[:1] == "-" and os.path.isfile(a)]
        if dashed:
            message += f"; {dashed[0]} is a file: put -- before it ({self.prog} -- {dashed[0]})"
        self.exit(2, f"manifestkit: error: {message}; see {self.prog} --help\n")


def _samples_epilog() -> str:
    from manifestkit.manifest.model import SAMPLE_VALID_AT, samples_path

    folder = samples_path()
    # raw text (RawDescriptionHelpFormatter): argparse would break the paths at their hyphens
    return (
        "Sample images (tiny-stream.vmdk, tiny-dynamic.vhd, tiny.raw) and a sample manifest\n"
        f"are installed in:\n  {folder}\nTry:\n"
        f"  manifestkit inspect {folder / 'tiny-stream.vmdk'}\n"
        f"  manifestkit validate --at {SAMPLE_VALID_AT} {folder / 'sample-manifest.xml'}\n"
        "(the sample's URLs were signed on 2026-01-01 and expired 7 days later: --at checks\n"
        "their expiry as of that time)"
    )


def build_parser() -> argparse.ArgumentParser:
    common = common_options(defaults=False)
    parser = _Parser(
        prog="manifestkit",
        description="Prepare a disk image for EC2 ImportInstance/ImportVolume and run the import.",
        parents=[common_options()],
        epilog=_samples_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"manifestkit {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"manifestkit.cli.{name}").register(subparsers, common)
    return parser


class _OneLineErrors(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"manifestkit: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:  # only log.exception under --debug attaches one
            line += "\n" + self.formatException(record.exc_info)
        return line


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLineErrors())
    log.handlers[:] = [handler]
    log.setLevel(logging.DEBUG if debug else logging.INFO)
    log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except ManifestkitError as exc:  # from an argument type such as parse_size
        print(f"manifestkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    debug = bool(getattr(args, "debug", False))
    _configure_logging(debug)
    try:
        return int(args.run(args) or 0)
    except ManifestkitError as exc:
        if debug:  # the traceback, then the same one line as without --debug
            traceback.print_exc(file=sys.stderr)
        print(f"manifestkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("manifestkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
        if debug:
            raise
        print(
            f"manifestkit: error: unexpected {type(exc).__name__}: {exc} "
            "(run with --debug for details)",
            file=sys.stderr,
        )
        return 1
