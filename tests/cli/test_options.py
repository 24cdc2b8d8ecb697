"""Options: one meaning per short option (issue 11 item 9) and advice that fits (item 12)."""

from __future__ import annotations

import argparse
import re
import subprocess
from pathlib import Path

import pytest

from manifestkit.cli import COMMANDS, build_parser
from manifestkit.cli._arguments import _DAY, _MAX_DAYS
from manifestkit.cli._aws_options import aws_settings_from
from manifestkit.errors import UsageError
from manifestkit.parts import PartPlan
from manifestkit.s3.presign import MAX_EXPIRES
from manifestkit.sizes import GiB, MiB
from tests.cli.helpers import RAW, STREAM, run

#: ec2-import-instance's short options (and the EC2 API tools' common ones), the meanings that win
CLASSIC = {
    "-t": "--instance-type",
    "-a": "--architecture",
    "-p": "--platform",
    "-b": "--bucket",
    "-f": "--format",
    "-z": "--availability-zone",
    "-s": "--volume-size",
    "-g": "--group",
    "-d": "--description",
    "-x": "--expires",
    "-o": "--owner-akid",
    "-w": "--owner-sak",
    "-O": "--aws-access-key",
    "-W": "--aws-secret-key",
    "-T": "--security-token",
    "-U": "--url",
}


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def test_every_command_of_the_table_is_built() -> None:
    assert sorted(command_parsers()) == sorted(c.name for c in COMMANDS)


def test_item9_one_short_option_one_meaning_in_every_command() -> None:
    meanings: dict[str, set[tuple[str, tuple[str, ...]]]] = {}
    where: dict[str, set[str]] = {}
    for name, parser in command_parsers().items():
        for action in parser._actions:
            for option in action.option_strings:
                if re.fullmatch(r"-[A-Za-z]", option):
                    longs = tuple(o for o in action.option_strings if o.startswith("--"))
                    meanings.setdefault(option, set()).add((action.dest, longs))
                    where.setdefault(option, set()).add(name)
    clashes = {short: sorted(m) for short, m in meanings.items() if len(m) != 1}
    assert not clashes, clashes
    # the classic meanings win wherever the short option exists
    for short, long in CLASSIC.items():
        (only,) = meanings[short]
        assert long in only[1], (short, only)


def test_item9_manifest_p_is_not_the_prefix(capsys, tmp_path: Path, monkeypatch) -> None:
    """manifest IMG -b bkt -p Windows signed under s3://bkt/Windows/ without a word."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "manifest", str(RAW), "-b", "bkt", "-p", "Windows")
    assert code == 2 and out == "" and not list(tmp_path.iterdir())
    assert "unrecognized arguments: -p Windows; did you mean --prefix Windows?" in err
    assert err.rstrip().endswith("see manifestkit manifest --help")


def test_item9_manifest_o_points_to_output_file(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "manifest", str(RAW), "-b", "bkt", "-o", "m.xml")
    assert code == 2 and "did you mean --output-file m.xml? (-o is --owner-akid" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["tasks", "-o", "json"],
        ["cancel", "import-i-abc", "-o", "json"],
        ["inspect", str(RAW), "-o", "json"],
        ["upload", str(RAW), "-b", "bkt", "-ojson"],
    ],
)
def test_item9_o_json_gets_did_you_mean(capsys, argv: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert "did you mean --output json?" in err and err.count("\n") == 1


def test_item12_platform_in_any_case_is_ec2s_spelling() -> None:
    for given, sent in (("windows", "Windows"), ("WINDOWS", "Windows"), ("linux", "Linux")):
        args = build_parser().parse_args(["import-instance", "x.raw", "-p", given])
        assert args.platform == sent


@pytest.mark.parametrize(
    "argv",
    [
        ["upload", "x.raw", "-b", "bkt"],
        ["resume", "m.xml", "x.raw"],
        ["manifest", "x.raw", "-b", "bkt"],
        ["import-volume", "x.raw", "-z", "us-east-1a"],
    ],
)
def test_item12_expires_is_x_everywhere_and_says_its_range(capsys, argv: list[str]) -> None:
    assert build_parser().parse_args([*argv, "-x", "0.5"]).expires == 43200
    assert build_parser().parse_args([*argv, "--expires", "7"]).expires == MAX_EXPIRES
    for bad in ("0", "8", "-1", "nan", "inf"):
        code, _, err = run(capsys, *argv, "-x", bad)
        assert code == 2 and "more than 0 and at most 7 days" in err, (bad, err)
        assert "outside 0-7" not in err


def test_item12_expires_limit_is_presigns() -> None:
    assert _MAX_DAYS * _DAY == MAX_EXPIRES


def test_item12_part_size_errors_state_the_range_for_this_image() -> None:
    with pytest.raises(UsageError) as small:
        PartPlan(file_bytes=2 * GiB, part_size=1024, basename="d.raw")
    assert "give a --part-size between 2.1 KiB and 5.0 GiB" in str(small.value)
    with pytest.raises(UsageError) as big:
        PartPlan(file_bytes=10 * MiB, part_size=6 * GiB, basename="d.raw")
    assert "between 11 B and 5.0 GiB" in str(big.value)  # 10 MiB in at most 1,000,000 parts
    # the smallest size it names works, one byte less does not
    assert PartPlan(file_bytes=2 * GiB, part_size=2148, basename="d.raw").count <= 1_000_000
    with pytest.raises(UsageError):
        PartPlan(file_bytes=2 * GiB, part_size=2147, basename="d.raw")


def test_item12_unrecognized_arguments_point_to_the_commands_help(capsys) -> None:
    code, _, err = run(capsys, "inspect", str(RAW), "--bogus")
    assert code == 2 and err.rstrip().endswith("see manifestkit inspect --help")


def test_item12_positionals_are_named_alike_and_explained() -> None:
    for name, parser in command_parsers().items():
        for action in parser._actions:
            if action.option_strings or isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (name, action.dest)
            if action.dest in ("image", "source"):
                assert action.metavar == "IMAGE", (name, action.dest)
        for action in parser._actions:
            if "--image" in action.option_strings:
                assert action.metavar == "IMAGE", name


def test_item12_security_token_is_accepted() -> None:
    args = build_parser().parse_args(["tasks", "-T", "token-1"])
    assert aws_settings_from(args).session_token == "token-1"
    args = build_parser().parse_args(["upload", "x", "-b", "bkt", "--security-token", "t2"])
    assert aws_settings_from(args).session_token == "t2"


def test_item12_one_part_is_one_part(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "manifest", str(RAW), "-b", "bkt", "--region", "us-east-1")
    assert code == 0, err
    assert ": 1 part of " in out and "part(s)" not in out


def test_item12_descriptor_only_vmdk_parts_are_the_datas(capsys, tmp_path: Path) -> None:
    descriptor = tmp_path / "flat.vmdk"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat"]
        + [str(descriptor), "30M"],
        check=True,
    )
    assert descriptor.stat().st_size < 1024  # the text; the 30 MiB are in flat-flat.vmdk
    code, out, err = run(
        capsys, "inspect", str(descriptor), "--part-size", "1M", "--output", "json"
    )
    assert code == 0, err
    assert '"parts": 30,' in out


def test_item12_convert_to_a_raw_name_warns(capsys, tmp_path: Path) -> None:
    target = tmp_path / "out.raw"
    code, _, err = run(capsys, "convert", str(RAW), str(target))
    assert code == 0, err
    assert f"{target}: convert writes a streamOptimized VMDK whatever the name says" in err
    assert target.read_bytes()[:4] == b"KDMV"
    code, _, err = run(capsys, "convert", str(RAW), str(tmp_path / "out.vmdk"))
    assert code == 0 and "whatever the name says" not in err


def test_item12_format_mismatch_does_not_suggest_convert(capsys, sandbox, bucket: str) -> None:
    flags = ["--s3-endpoint-url", sandbox.endpoint_url, "--region", sandbox.region]
    code, out, err = run(capsys, "upload", str(STREAM), "-b", bucket, "-f", "RAW", *flags)
    assert code == 2 and out == ""
    assert "--format RAW was given but the content is VMDK" in err
    assert "--convert" not in err and "--format VMDK" in err


def test_item12_counts_of_one_read_as_one(tmp_path: Path) -> None:
    """'1 part', '1 other file', '1 character' wherever a count may be one."""
    from manifestkit.images import inspect_image
    from manifestkit.s3.bucket_names import validate_bucket_name

    descriptor = tmp_path / "flat.vmdk"
    subprocess.run(
        ["qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat"]
        + [str(descriptor), "1M"],
        check=True,
    )
    (problem,) = inspect_image(str(descriptor)).problems
    assert "data is in 1 other file;" in problem
    with pytest.raises(UsageError, match="is 1 character long"):
        validate_bucket_name("x")
