"""Command-line entry point: parse, call the library, print, map errors to exit codes.

Exit codes and the one-line error format are design.md §2's; with ``--output json`` every run,
failed or not, prints one JSON document on stdout (an error is ``{"error": {...}}``).

A command is one line in ``COMMANDS``: its name, the module under ``manifestkit.cli`` that
defines it, and its one-line help. The module exposes ``register(subparsers, common)``, adds its
commands with ``subparsers.add_parser(NAME, parents=[common], ...)`` (the help comes from
``COMMANDS``) and sets ``run=<function(args) -> int>`` as the parser default. Only the module of
the command being run is imported, so ``manifestkit inspect`` never loads boto3, lxml or tqdm, and
``manifestkit --help`` lists every command from this table alone.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, NoReturn

from manifestkit import __version__
from manifestkit.errors import ManifestkitError, UsageError


class Command(NamedTuple):
    name: str
    module: str
    help: str


#: every command, in the order ``--help`` lists them (the pipeline's order); one line each
COMMANDS = (
    Command(
        "inspect",
        "inspect",
        "show an image's format, sizes and parts, and whether ImportInstance takes it",
    ),
    Command("convert", "convert", "convert a VMDK, VHD or RAW image to a streamOptimized VMDK"),
    Command(
        "manifest",
        "manifest",
        "write the VM Import Manifest for an image (offline: no S3 or EC2 call)",
    ),
    Command(
        "validate",
        "manifest",
        "check a manifest against the XSD and the rules the XSD cannot say",
    ),
    Command(
        "upload",
        "upload",
        "upload an image's parts and its manifest to S3; prints the manifest URL",
    ),
    Command(
        "resume", "upload", "finish an upload from its manifest (file or URL) and the local image"
    ),
    Command(
        "verify",
        "verify",
        "check that every part a manifest names is in S3 (and matches the image)",
    ),
    Command("delete", "delete", "delete an upload's parts and manifest from S3"),
    Command(
        "import-instance",
        "import_",
        "upload an image and import it as an EC2 instance (ImportInstance)",
    ),
    Command(
        "import-volume", "import_", "upload an image and import it as an EBS volume (ImportVolume)"
    ),
    Command(
        "import-ami",
        "import_ami",
        "upload an image and make it an AMI (ImportVolume, snapshot, RegisterImage)",
    ),
    Command("tasks", "tasks", "show conversion tasks (state, progress, instance/volume ids)"),
    Command("cancel", "tasks", "cancel a conversion task"),
    Command(
        "sandbox",
        "sandbox",
        "run an offline S3 + EC2 import endpoint on loopback (to try things out, tests)",
    ),
)

#: options that come before the command and take a value (to find the command in argv)
_GLOBAL_WITH_VALUE = ("--output",)

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
        help="text for people, json for scripts (one JSON document, errors too)",
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=default(False), help="no progress bars"
    )
    return common


class _Parser(argparse.ArgumentParser):
    """argparse with design.md §2's error line: a ``UsageError`` (one line, exit 2) pointing at
    the command's own --help, with a hint when the mistake is a common one."""

    #: makes the epilog when help is printed (what it needs is too slow to load for every run)
    lazy_epilog: Callable[[], str] | None = None

    def format_help(self) -> str:
        if self.lazy_epilog is not None and self.epilog is None:
            self.epilog = self.lazy_epilog()
        return super().format_help()

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        self._seen = list(sys.argv[1:] if args is None else args)  # for error()'s hint
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # argparse reports these from the main parser: name the command's own --help
            command = self._command_parsers().get(getattr(parsed, "command", None) or "", self)
            command.error(f"unrecognized arguments: {' '.join(extras)}", extras=extras)
        return parsed

    def _command_parsers(self) -> dict[str, argparse.ArgumentParser]:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    def error(self, message: str, *, extras: Sequence[str] = ()) -> NoReturn:  # type: ignore[override]
        hints = list(_hints(self.prog, extras, getattr(self, "_seen", ())))
        # a file whose name starts with '-' is taken for an option: say how to pass it
        dashed = [a for a in getattr(self, "_seen", ()) if a[:1] == "-" and os.path.isfile(a)]
        if dashed:
            hints.append(f"{dashed[0]} is a file: put -- before it ({self.prog} -- {dashed[0]})")
        hints.append(f"see {self.prog} --help")
        raise UsageError(message, fix="; ".join(hints))


def _hints(prog: str, extras: Sequence[str], seen: Sequence[str]) -> Iterable[str]:
    """What the user probably meant, for the common mistakes."""
    value = _misread_output(seen)
    if value:
        yield f"did you mean --output {value}? (-o is --owner-akid, as in ec2-import-instance)"
    command = prog.split(" ", 1)[1] if " " in prog else ""
    if command == "sandbox" and any(e.split("=")[0] in _AWS_SIDE for e in extras):
        yield (
            "manifestkit sandbox runs the sandbox itself and takes only --host, --port, --region, "
            "--access-key and --secret-key; --local and the endpoint options (-U/--url, "
            "--ec2-endpoint-url, --s3-endpoint-url) belong to the commands that talk to AWS: "
            "point them at a running sandbox with the export lines it prints"
        )
        return
    shorts = [e for e in extras if re.fullmatch(r"-[A-Za-z]", e) and not (value and e == "-o")]
    meanings = short_option_meanings() if shorts else {}
    for short in shorts:
        long, commands = meanings.get(short, ("", []))
        renamed = _RENAMED.get((command, short))
        if renamed:
            after = extras[extras.index(short) + 1 :][:1]
            meaning = f"{short} is {long} in manifestkit" if long else f"{command} has no {short}"
            yield f"did you mean {' '.join([renamed, *after])}? ({meaning})"
        elif long:
            yield f"{short} is {long} in {', '.join(commands)}; {prog} does not take it"


#: short options a command had before each short option got one meaning in every command
_RENAMED = {("manifest", "-o"): "--output-file", ("manifest", "-p"): "--prefix"}


def _misread_output(argv: Sequence[str]) -> str | None:
    """``json`` for ``-o json`` (or ``-ojson``, ``-o=json``): an output format given to -o."""
    for index, word in enumerate(argv):
        if word == "--":
            break
        value = argv[index + 1] if word == "-o" and index + 1 < len(argv) else word[2:]
        if word.startswith("-o") and value.lstrip("=") in ("json", "text"):
            return value.lstrip("=")
    return None


_AWS_SIDE = ("--local", "-U", "--url", "--ec2-endpoint-url", "--s3-endpoint-url", "--profile")


def _command_in(argv: Sequence[str]) -> str | None:
    """The command word of ``argv`` (after the options that may come before it), if any."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--":
            return None
        elif word in _GLOBAL_WITH_VALUE:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


class _Subparsers:
    """What ``register`` gets: ``add_parser`` with the help line taken from ``COMMANDS``."""

    def __init__(self, subparsers: Any) -> None:
        self._subparsers = subparsers
        self.added: list[str] = []

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("help", _HELP.get(name))
        self.added.append(name)
        return self._subparsers.add_parser(name, **kwargs)


_HELP = {command.name: command.help for command in COMMANDS}


def _samples_epilog() -> str:
    from manifestkit.package_data import SAMPLE_VALID_AT, samples_path

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


def build_parser(commands: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The parser with ``commands`` built in full (default: all); the others are listed by
    their help line only, without importing their modules."""
    wanted = None if commands is None else set(commands)
    modules = [c.module for c in COMMANDS if wanted is None or c.name in wanted]
    common = common_options(defaults=False)
    parser = _Parser(
        prog="manifestkit",
        description="Prepare a disk image for EC2 ImportInstance/ImportVolume and run the import.",
        parents=[common_options()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.lazy_epilog = _samples_epilog
    parser.add_argument("--version", action="version", version=f"manifestkit {__version__}")
    subparsers = _Subparsers(parser.add_subparsers(dest="command", metavar="COMMAND"))
    registered: set[str] = set()
    for command in COMMANDS:
        if command.module in modules and command.module not in registered:
            registered.add(command.module)
            importlib.import_module(f"manifestkit.cli.{command.module}").register(
                subparsers, common
            )
        elif command.name not in subparsers.added:
            subparsers.add_parser(command.name, add_help=False)
    return parser


def short_option_meanings() -> dict[str, tuple[str, list[str]]]:
    """``-p`` -> ("--platform", ["import-instance"]): every short option of every command."""
    meanings: dict[str, tuple[str, list[str]]] = {}
    for name, sub in build_parser()._command_parsers().items():  # type: ignore[attr-defined]
        for action in sub._actions:
            names = action.option_strings
            for index, short in enumerate(names):
                if not re.fullmatch(r"-[A-Za-z]", short):
                    continue
                # ("-O", "--aws-access-key", "-o", "--owner-akid"): -o is --owner-akid
                after = [o for o in names[index + 1 : index + 2] if o.startswith("--")]
                longs = after or [o for o in names if o.startswith("--")] or [short]
                meanings.setdefault(short, (longs[0], []))[1].append(name)
    return meanings


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


def error_kind(exc: BaseException) -> str:
    """A stable machine-readable name for an error: its class in snake_case (``UsageError`` ->
    ``usage_error``, ``NotImportableError`` -> ``not_importable_error``)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type(exc).__name__).lower()


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether ``--output json`` was asked for (the last one wins), parsed or not."""
    wanted = False
    for index, word in enumerate(argv):
        if word == "--":
            break
        if word == "--output" and index + 1 < len(argv):
            wanted = argv[index + 1] == "json"
        elif word.startswith("--output="):
            wanted = word.split("=", 1)[1] == "json"
    return wanted


def _fail(json_output: bool, exc: BaseException, **more: Any) -> int:
    """design.md §2's one line on stderr; with --output json also the error document on stdout
    (unless the command printed its own document already). Returns the exit code."""
    if isinstance(exc, ManifestkitError):
        exit_code, line = exc.exit_code, str(exc)
        error: dict[str, Any] = {"kind": error_kind(exc), "message": exc.message}
        if exc.fix:
            error["fix"] = exc.fix
    else:  # a surprise: the class name says what kind
        exit_code, line = (
            1,
            f"unexpected {type(exc).__name__}: {exc} (run with --debug for details)",
        )
        error = {"kind": error_kind(exc), "message": line}
    print(f"manifestkit: error: {line}", file=sys.stderr)
    if json_output:
        from manifestkit.cli import _output

        if not _output.emitted():
            error["exit_code"] = exit_code
            error.update({k: v for k, v in more.items() if v is not None})
            _output.emit_json({"error": error})
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    from manifestkit.cli import _output

    argv = list(sys.argv[1:] if argv is None else argv)
    json_output = _wants_json(argv)
    _output.reset()
    command = _command_in(argv)
    parser = build_parser([command] if command in _HELP else [])
    try:
        args = parser.parse_args(argv)
    except ManifestkitError as exc:  # argparse's usage errors, and argument types' own
        return _fail(json_output, exc)
    json_output = getattr(args, "output", "text") == "json"
    misread = _misread_output(argv)
    if misread:  # -o took the format as an access key id
        return _fail(
            json_output,
            UsageError(
                f"-o {misread}: -o is --owner-akid (the access key id, as in ec2-import-instance)",
                fix=f"did you mean --output {misread}?",
            ),
        )
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        if json_output:
            return _fail(json_output, UsageError("no command given", fix="see manifestkit --help"))
        return 2
    debug = bool(getattr(args, "debug", False))
    _configure_logging(debug)
    from manifestkit.termination import Terminated, signals_as_interrupts

    try:
        with signals_as_interrupts():  # clean-up code runs on SIGTERM/SIGHUP as on Ctrl-C
            code = int(args.run(args) or 0)
    except ManifestkitError as exc:
        if debug:  # the traceback, then the same one line as without --debug
            traceback.print_exc(file=sys.stderr)
        return _fail(json_output, exc, manifest_url=getattr(exc, "manifest_url", None))
    except Terminated as exc:
        print(f"manifestkit: terminated ({exc.name})", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        print("manifestkit: interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into one line
        if debug:
            raise
        return _fail(json_output, exc)
    if json_output and code and not _output.emitted():
        # a command that ended without its document (interrupted, or failed in its own words on
        # stderr) still owes scripts one
        _output.emit_json({"error": _unreported_document(code)})
    return code


def _unreported_document(code: int) -> dict[str, Any]:
    if code == 130:
        return {"kind": "interrupted", "message": "interrupted", "exit_code": 130}
    if code > 128:  # 128 + the signal's number (SIGTERM, SIGHUP)
        return {"kind": "terminated", "message": "terminated by a signal", "exit_code": code}
    return {"kind": "failed", "message": "the command failed (see stderr)", "exit_code": code}
