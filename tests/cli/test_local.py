"""``--local`` and the sandbox command (issue 11 items 6, 7 and 8)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from manifestkit.aws import AwsSettings, ec2_client, make_session, s3_client
from tests.cli.helpers import RAW, SAMPLES, manifestkit, new_user_env, run

#: a configuration that would break (or redirect) any client that read it
BROKEN_CONFIG = """\
[default]
region = nowhere-1
endpoint_url = http://127.0.0.1:9
s3 =
    addressing_style = virtual
[profile other]
region = eu-west-9
"""


# ------------------------------------------------------------------ item 6: no user config


@pytest.mark.slow
def test_item6_readme_command_with_a_missing_profile(tmp_path: Path) -> None:
    """README command 1 for anyone with a profile set (that does not exist here), a config file
    that points elsewhere and a configured endpoint: --local reads none of it."""
    shutil.copytree(SAMPLES, tmp_path / "samples")
    config = tmp_path / "config"
    config.write_text(BROKEN_CONFIG)
    env = new_user_env(
        AWS_PROFILE="nosuch",
        AWS_DEFAULT_PROFILE="nosuch",
        AWS_CONFIG_FILE=str(config),
        AWS_SHARED_CREDENTIALS_FILE=str(config),
        AWS_ENDPOINT_URL="http://127.0.0.1:9",
    )
    done = manifestkit(
        ["import-instance", "samples/tiny-stream.vmdk", "-p", "Windows", "--local", "--wait"],
        env,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[1] == "completed", done.stdout
    assert "Traceback" not in done.stderr and "nosuch" not in done.stderr


def test_item6_isolated_settings_read_no_profile(monkeypatch, tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(BROKEN_CONFIG)
    monkeypatch.setenv("AWS_PROFILE", "nosuch")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    settings = AwsSettings(
        region="us-east-1",
        s3_endpoint_url="http://127.0.0.1:7",
        ec2_endpoint_url="http://127.0.0.1:8",
        access_key="AKIDLOCAL",
        secret_key="local-secret",
        addressing_style="path",
        isolated=True,
    )
    session = make_session(settings)
    assert session.region_name == "us-east-1"
    assert session.get_credentials().access_key == "AKIDLOCAL"
    assert s3_client(session, settings).meta.endpoint_url == "http://127.0.0.1:7"
    assert ec2_client(session, settings).meta.endpoint_url == "http://127.0.0.1:8"
    # the same settings, not isolated, do read the environment: the test can fail
    with pytest.raises(Exception, match="nosuch"):
        make_session(AwsSettings(region="us-east-1")).client("s3")


def test_item6_sandbox_settings_are_isolated(sandbox) -> None:
    assert sandbox.aws_settings().isolated


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--profile", "work"], "--profile"),
        (["-O", "AKID", "-W", "secret"], "-O/--aws-access-key and -W/--aws-secret-key"),
        (["-U", "http://127.0.0.1:9"], "-U/--ec2-endpoint-url"),
        (["-T", "token"], "-T/--security-token"),
    ],
)
def test_item6_local_refuses_options_naming_another_account(
    capsys, flags: list[str], named: str
) -> None:
    """--profile (or keys, or an endpoint) with --local would be silently ignored: refused."""
    code, out, err = run(capsys, "import-volume", str(RAW), "-z", "us-east-1a", "--local", *flags)
    assert code == 2 and out == ""
    assert err.startswith(f"manifestkit: error: {named} cannot be used with --local"), err
    assert err.count("\n") == 1


# ------------------------------------------------------------------ item 7: --local forgets


def test_item7_import_local_waits_without_being_told(capsys) -> None:
    code, out, err = run(
        capsys, "import-volume", str(RAW), "-z", "us-east-1a", "--local", "--output", "json"
    )
    assert code == 0, err
    task = json.loads(out)["task"]
    assert task["state"] == "completed" and task["volume_ids"], task
    assert "--local: waiting for the task" in err


@pytest.mark.parametrize("argv", [["tasks", "--local"], ["cancel", "import-i-abc", "--local"]])
def test_item7_tasks_and_cancel_local_point_to_the_sandbox_command(capsys, argv) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"manifestkit: error: {argv[0]} --local would look into a new, empty")
    assert "run manifestkit sandbox" in err and "export lines" in err


def test_item7_help_says_what_local_does(capsys) -> None:
    for command, words in (
        ("import-instance", "implies --wait"),
        ("import-volume", "implies --wait"),
        ("upload", "lives only as long as this command"),
        ("tasks", "run manifestkit sandbox"),
        ("cancel", "run manifestkit sandbox"),
    ):
        with pytest.raises(SystemExit):
            run(capsys, command, "--help")
        text = " ".join(capsys.readouterr().out.split())
        assert words in text, command


# ------------------------------------------------------------------ item 8: sandbox options


@pytest.mark.parametrize(
    "argv", [["--local"], ["-U", "http://127.0.0.1:1"], ["--ec2-endpoint-url", "http://x"]]
)
def test_item8_sandbox_says_what_it_takes(capsys, argv: list[str]) -> None:
    code, out, err = run(capsys, "sandbox", *argv)
    assert code == 2 and out == ""
    assert err.startswith("manifestkit: error: unrecognized arguments: ")
    assert "takes only --host, --port, --region, --access-key and --secret-key" in err
    assert "export lines" in err and err.rstrip().endswith("see manifestkit sandbox --help")
    assert err.count("\n") == 1
