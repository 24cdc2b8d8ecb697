"""Command-line usage errors of import-instance / import-volume / tasks / cancel (no network)."""

from __future__ import annotations

import pytest

from manifestkit.cli import build_parser, main
from manifestkit.cli.import_ import launch_spec_from


def _exit_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        return int(exc.code or 0)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["import-volume", "x.raw", "-b", "bkt"], "-z/--availability-zone"),
        (["import-instance", "x.raw", "-b", "bkt"], "-p/--platform"),
        (["cancel"], "ID"),
        (
            [
                "import-instance",
                "x.raw",
                "-p",
                "Windows",
                "--instance-initiated-shutdown-behavior",
                "explode",
            ],
            "invalid choice",
        ),
        (
            [
                "import-instance",
                "x.raw",
                "-p",
                "Windows",
                "--user-data",
                "a",
                "--user-data-file",
                "f",
            ],
            "not allowed with",
        ),
        (["import-volume", "x.raw", "-z", "us-east-1a", "-x", "30"], "at most 7 days"),
    ],
)
def test_argparse_usage_errors_exit_2(argv: list[str], fragment: str, capsys) -> None:
    assert _exit_code(argv) == 2
    assert fragment in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["import-instance", "-p", "Windows", "-b", "bkt"], "no image given"),
        (["import-instance", "disk.raw", "-p", "Windows"], "no bucket given"),
        (
            [
                "import-volume",
                "disk.raw",
                "-z",
                "us-east-1a",
                "--manifest-url",
                "http://127.0.0.1:9/m",
            ],
            "not both",
        ),
        (
            [
                "import-volume",
                "-z",
                "us-east-1a",
                "--manifest-url",
                "http://127.0.0.1:9/m",
                "--local",
            ],
            "cannot be used with --local",
        ),
        (
            ["import-volume", "-z", "us-east-1a", "--manifest-url", "ftp://x/y"],
            "not an http(s) URL",
        ),
        (
            [
                "import-instance",
                "-p",
                "Windows",
                "--user-data-file",
                "/nonexistent/ud",
                "--manifest-url",
                "http://127.0.0.1:9/m",
            ],
            "cannot read --user-data-file",
        ),
    ],
)
def test_our_usage_errors_are_one_line_exit_2(argv: list[str], fragment: str, capsys) -> None:
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("manifestkit: error: ")
    assert fragment in err
    assert "Traceback" not in err


def test_classic_options_map_onto_the_launch_spec(tmp_path) -> None:
    user_data = tmp_path / "ud.sh"
    user_data.write_bytes(b"#!/bin/sh\n\x00binary ok\n")
    args = build_parser().parse_args(
        [
            "import-instance",
            "disk.vmdk",
            "-p",
            "Windows",
            "-t",
            "m1.xlarge",
            "-a",
            "i386",
            "-z",
            "us-east-1b",
            "-g",
            "web",
            "-g",
            "sg-123,ssh",
            "--subnet",
            "subnet-1",
            "--private-ip-address",
            "10.1.2.3",
            "--monitor",
            "--instance-initiated-shutdown-behavior",
            "terminate",
            "--user-data-file",
            str(user_data),
            "--additional-info",
            "info",
            "-b",
            "bkt",
            "-x",
            "3",
            "-s",
            "9",
            "-f",
            "vmdk",
            "-d",
            "desc",
            "--prefix",
            "imports",
        ]
    )
    spec = launch_spec_from(args)
    assert spec.instance_type == "m1.xlarge" and spec.architecture == "i386"
    assert spec.availability_zone == "us-east-1b"
    assert spec.group_names == ("web", "ssh") and spec.group_ids == ("sg-123",)
    assert (spec.subnet_id, spec.private_ip_address) == ("subnet-1", "10.1.2.3")
    assert spec.monitoring is True and spec.shutdown_behavior == "terminate"
    assert spec.user_data == b"#!/bin/sh\n\x00binary ok\n"
    assert spec.additional_info == "info"
    assert args.expires == 3 * 86400 and args.volume_size == 9 and args.format == "VMDK"
    assert args.bucket == "bkt" and args.prefix == "imports" and args.description == "desc"


def test_expires_defaults_to_seven_days_without_x() -> None:
    args = build_parser().parse_args(["import-volume", "d.raw", "-z", "us-east-1a"])
    assert args.expires == 7 * 86400
    assert launch_spec_from  # imported for the instance command only
