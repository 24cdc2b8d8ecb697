"""Start-up (issue 12 item 6): commands import boto3, lxml, tqdm and the sandbox only when they
use them. Checked by what a fresh interpreter has loaded, not by time (bench/bench_startup.py
measures that)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cli.helpers import RAW, STREAM, new_user_env

HEAVY = ("boto3", "botocore", "s3transfer", "urllib3", "lxml", "xmlschema", "tqdm", "moto")


def loaded_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    probe = (
        f"import json, sys\n{code}\nsys.__stdout__.write('\\n' + json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=new_user_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout.rsplit("\n", 1)[1])


def heavy(modules: list[str]) -> list[str]:
    return sorted({m.split(".")[0] for m in modules} & set(HEAVY))


@pytest.mark.parametrize("image", [RAW, STREAM])
def test_inspect_loads_no_aws_xml_or_progress_library(image) -> None:
    modules = loaded_after(
        "from manifestkit.cli import main\n"
        f"assert main(['inspect', {str(image)!r}, '--output', 'json']) == 0"
    )
    assert "manifestkit.images.inspect" in modules  # the probe did run inspect
    assert heavy(modules) == []
    assert "manifestkit.sandbox" not in modules


def test_inspect_deep_and_failures_stay_light() -> None:
    modules = loaded_after(
        "from manifestkit.cli import main\n"
        f"assert main(['inspect', {str(STREAM)!r}, '--deep', '-q']) == 0\n"
        "assert main(['inspect', '/nonexistent/x.raw', '--output', 'json']) == 2"
    )
    assert heavy(modules) == []


def test_help_lists_every_command_without_importing_them() -> None:
    from manifestkit.cli import COMMANDS

    modules = loaded_after(
        "from manifestkit.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert heavy(modules) == []
    assert not [
        m for m in modules if m.startswith("manifestkit.cli.") and m != "manifestkit.cli._output"
    ]
    done = subprocess.run(
        [sys.executable, "-m", "manifestkit", "--help"],
        env=new_user_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    for command in COMMANDS:
        assert f"    {command.name} " in done.stdout, command.name


def test_the_images_package_loads_nothing_heavy() -> None:
    modules = loaded_after(
        "import importlib, pkgutil, manifestkit.images as images\n"
        "for found in pkgutil.walk_packages(images.__path__, 'manifestkit.images.'):\n"
        "    importlib.import_module(found.name)"
    )
    assert "manifestkit.images.blocks" in modules
    assert heavy(modules) == []


def test_a_command_that_uses_boto3_still_gets_it() -> None:
    # the other side of the laziness: a command that signs URLs loads botocore when it runs
    modules = loaded_after(
        "from manifestkit.cli import main\n"
        f"assert main(['manifest', {str(RAW)!r}, '-b', 'bkt', '--output-file', '-', "
        "'--region', 'us-east-1', '-O', 'AKIDTEST', '-W', 'test-secret']) == 0"
    )
    assert "botocore" in modules
