"""design.md §2 for every command: ``--output json`` prints exactly one JSON document on stdout
(warnings and progress go to stderr); a failure is one ``manifestkit: error:`` line on stderr with
the documented exit code and nothing on stdout."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .helpers import ZONE, endpoint_flags, run

JSON = ["--output", "json", "-q"]


def _one_document(code: int, out: str, err: str, expected: int = 0) -> Any:
    assert code == expected, err
    document = json.loads(out)  # raises on anything before or after the one document
    assert out.endswith("\n") and not err.lstrip().startswith(("{", "["))
    return document


def test_every_command_prints_one_json_document(
    sandbox: Any, bucket: str, workdir: Path, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MANIFESTKIT_SANDBOX_PART_WAIT", "30")  # --no-upload's task stays active
    image = str(workdir / "tiny.raw")
    aws = endpoint_flags(sandbox)

    doc = _one_document(*run(capsys, ["inspect", image, *JSON]))
    assert doc["format"] == "RAW"
    converted = str(workdir / "converted.vmdk")
    doc = _one_document(*run(capsys, ["convert", image, converted, *JSON]))
    assert doc["output"] == converted

    manifest = str(workdir / "m.xml")
    doc = _one_document(
        *run(capsys, ["manifest", image, "-b", bucket, "--output-file", manifest, *JSON, *aws])
    )
    assert doc["manifest"] == manifest
    endpoint = ["--s3-endpoint-url", sandbox.s3_endpoint_url]  # the sandbox is on loopback
    doc = _one_document(*run(capsys, ["validate", manifest, *JSON, *endpoint]))
    assert doc["valid"] is True
    assert [p for p in doc["problems"] if p["severity"] == "error"] == []

    doc = _one_document(*run(capsys, ["upload", image, "-b", bucket, *JSON, *aws]))
    url = doc["manifest_url"]
    verified = _one_document(*run(capsys, ["verify", url, "--image", image, *JSON, *endpoint]))
    assert verified["problems"] == []
    assert _one_document(*run(capsys, ["resume", url, image, *JSON, *aws]))["kept"] >= 1
    doc = _one_document(
        *run(
            capsys,
            ["import-instance", image, "-p", "Windows", "-b", bucket, "--dry-run", *JSON, *aws],
        )
    )
    assert doc == {"dry_run": True, "action": "ImportInstance", "allowed": True}

    doc = _one_document(
        *run(capsys, ["import-volume", "--manifest-url", url, "-z", ZONE, *JSON, *aws])
    )
    assert doc["task"]["kind"] == "volume"
    # --no-upload: a task that waits for its parts, to cancel (its warning goes to stderr)
    task = _one_document(
        *run(
            capsys,
            ["import-volume", image, "--no-upload", "-b", bucket, "-z", ZONE, *JSON, *aws],
        )
    )["task"]
    listed = _one_document(*run(capsys, ["tasks", task["id"], *JSON, *aws]))
    assert [t["id"] for t in listed["tasks"]] == [task["id"]]
    doc = _one_document(*run(capsys, ["cancel", task["id"], *JSON, *aws]))
    assert doc["cancelled"] == task["id"]
    doc = _one_document(*run(capsys, ["delete", url, "--ignore-active-task", *JSON, *aws]))
    assert doc["parts"] >= 1


@pytest.mark.parametrize(
    ("argv", "code", "names"),
    [
        (["inspect", "{missing}"], 2, "{missing}"),
        (["upload", "{missing}", "-b", "{bucket}"], 2, "{missing}"),
        (["upload", "{image}", "-b", "{bucket}", "--part-size", "ten"], 2, "ten"),
        (["import-volume", "{missing}", "-b", "{bucket}", "-z", ZONE], 2, "{missing}"),
        (["import-instance", "{image}", "-p", "Windows"], 2, "--bucket"),
        (["verify", "{missing}"], 2, "{missing}"),
        (["delete", "{missing}"], 2, "{missing}"),
        (["validate", "{missing}"], 2, "{missing}"),
        (["tasks", "not-a-task-id"], 2, "not-a-task-id"),
        (["resume", "{missing}", "{image}"], 2, "{missing}"),
    ],
)
def test_errors_are_one_line_on_stderr_with_json_too(
    sandbox: Any,
    bucket: str,
    workdir: Path,
    capsys: Any,
    argv: list[str],
    code: int,
    names: str,
) -> None:
    values = {"missing": str(workdir / "missing.raw"), "image": str(workdir / "tiny.raw")}
    values["bucket"] = bucket
    argv = [a.format(**values) for a in argv]
    offline = argv[0] in ("inspect", "verify", "validate")  # no AWS options
    got, out, err = run(capsys, [*argv, *JSON, *([] if offline else endpoint_flags(sandbox))])
    # the error is the JSON document (issue 11 item 10); people get the line on stderr
    error = json.loads(out)["error"]
    assert got == code and error["exit_code"] == code, (out, err)
    assert names.format(**values) in error["message"] + error.get("fix", "")
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("manifestkit: error: "), err
    assert names.format(**values) in lines[0]
