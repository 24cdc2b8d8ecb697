"""``--output json`` prints one JSON document, failures included (issue 11 item 10)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from manifestkit.cli import error_kind, main
from manifestkit.errors import ImageError, NotImportableError, UsageError
from tests.cli.helpers import RAW, run


def one_error(out: str) -> dict[str, Any]:
    document = json.loads(out)  # exactly one document: json.loads refuses trailing data
    assert list(document) == ["error"], document
    return document["error"]


@pytest.mark.parametrize(
    ("argv", "code", "kind", "words"),
    [
        (["inspect", "/nonexistent/disk.raw"], 2, "image_error", "/nonexistent/disk.raw"),
        (["inspect", str(RAW), "--bogus"], 2, "usage_error", "unrecognized arguments: --bogus"),
        (["import-instance", str(RAW), "-p", "Windows"], 2, "usage_error", "no bucket given"),
        (["import-volume", str(RAW)], 2, "usage_error", "-z/--availability-zone"),
        (["tasks", "--local"], 2, "usage_error", "tasks --local"),
        (["upload", str(RAW), "-b", "bkt", "-x", "0"], 2, "usage_error", "--expires 0"),
        (["nosuchcommand"], 2, "usage_error", "invalid choice"),
    ],
)
def test_item10_failures_print_one_json_error_document(
    capsys, argv: list[str], code: int, kind: str, words: str
) -> None:
    for placed in ([*argv, "--output", "json"], ["--output", "json", *argv]):
        got, out, err = run(capsys, *placed)
        assert got == code
        error = one_error(out)
        assert error["kind"] == kind and error["exit_code"] == code
        assert words in error["message"] + error.get("fix", ""), error
        # people still get design.md's one line on stderr
        assert err.startswith("manifestkit: error: ") and err.count("\n") == 1, err


def test_item10_text_output_stays_empty_on_failure(capsys) -> None:
    got, out, _ = run(capsys, "inspect", "/nonexistent/disk.raw")
    assert got == 2 and out == ""


def test_item10_unexpected_errors_and_interrupts(capsys, monkeypatch) -> None:
    import manifestkit.cli.inspect as inspect_cli

    def boom(args: Any) -> int:
        raise RuntimeError("surprise")

    monkeypatch.setattr(inspect_cli, "run", boom)
    got, out, err = run(capsys, "inspect", str(RAW), "--output", "json")
    error = one_error(out)
    assert got == 1 and error["kind"] == "runtime_error" and error["exit_code"] == 1
    assert "surprise" in error["message"] and "Traceback" not in err

    def interrupted(args: Any) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(inspect_cli, "run", interrupted)
    got, out, _ = run(capsys, "inspect", str(RAW), "--output", "json")
    assert got == 130 and one_error(out) == {
        "kind": "interrupted",
        "message": "interrupted",
        "exit_code": 130,
    }


def test_item10_a_command_that_failed_in_its_own_words_still_prints_a_document(
    capsys, monkeypatch
) -> None:
    import manifestkit.cli.inspect as inspect_cli

    monkeypatch.setattr(inspect_cli, "run", lambda args: 1)
    got, out, _ = run(capsys, "inspect", str(RAW), "--output", "json")
    assert got == 1 and one_error(out)["exit_code"] == 1


def test_item10_success_is_still_the_commands_own_document(capsys) -> None:
    got, out, _ = run(capsys, "inspect", str(RAW), "--output", "json")
    assert got == 0 and json.loads(out)["format"] == "RAW"


def test_item10_kinds_are_stable_snake_case() -> None:
    assert error_kind(UsageError("x")) == "usage_error"
    assert error_kind(ImageError("x")) == "image_error"
    assert error_kind(NotImportableError("x")) == "not_importable_error"
    assert error_kind(KeyError("x")) == "key_error"


def test_item10_main_returns_instead_of_exiting_on_usage_errors() -> None:
    assert main(["inspect"]) == 2


def test_item10_an_import_that_fails_after_the_upload_names_its_manifest_once(
    capsys, monkeypatch
) -> None:
    """The upload's manifest URL rides in the one error document (it was a second document)."""
    import manifestkit.workflow as workflow
    from manifestkit.errors import RemoteError

    def failing_import(*args: Any, **kwargs: Any) -> Any:
        error = RemoteError("ImportVolume failed", fix="see the status")
        error.manifest_url = "http://127.0.0.1:9/bkt/m.xml?X-Amz-Signature=abc"  # type: ignore[attr-defined]
        raise error

    monkeypatch.setattr(workflow, "import_volume", failing_import)
    argv = ["import-volume", str(RAW), "-z", "us-east-1a", "-b", "bkt", "--region", "us-east-1"]
    got, out, _ = run(capsys, *argv, "--output", "json")
    error = one_error(out)
    assert got == 1 and error["kind"] == "remote_error"
    assert error["manifest_url"].endswith("X-Amz-Signature=abc")
    got, out, _ = run(capsys, *argv)  # text: the URL is the result on stdout, as upload prints it
    assert got == 1 and out == "http://127.0.0.1:9/bkt/m.xml?X-Amz-Signature=abc\n"


def test_item10_a_terminated_command_prints_a_document(capsys, monkeypatch) -> None:
    import manifestkit.cli.inspect as inspect_cli
    from manifestkit.termination import Terminated

    def terminated(args: Any) -> int:
        raise Terminated(15)

    monkeypatch.setattr(inspect_cli, "run", terminated)
    got, out, _ = run(capsys, "inspect", str(RAW), "--output", "json")
    assert got == 143 and one_error(out)["kind"] == "terminated"
