"""Import commands on an image uploaded already take the same upload path as ``upload``
(issue 11 item 5): the first upload is used again, a second copy only with ``--new-upload``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .helpers import WAIT, ZONE, endpoint_flags, objects, run


def _import(capsys: Any, sandbox: Any, bucket: str, image: Path, *extra: str) -> dict[str, Any]:
    argv = ["import-volume", str(image), "-z", ZONE, "-b", bucket, *WAIT, "--output", "json"]
    code, out, err = run(capsys, [*argv, *extra, *endpoint_flags(sandbox)])
    assert code == 0, err
    return json.loads(out)


def test_import_volume_twice_uses_the_first_upload_unless_new_upload(
    sandbox: Any, bucket: str, workdir: Path, s3: Any, capsys: Any
) -> None:
    image = workdir / "tiny.raw"
    first = _import(capsys, sandbox, bucket, image)
    uploaded = sorted(objects(s3, bucket))
    second = _import(capsys, sandbox, bucket, image)
    assert second["task"]["state"] == "completed"
    assert sorted(objects(s3, bucket)) == uploaded  # no second copy of the parts
    assert first["task"]["id"] != second["task"]["id"]
    _import(capsys, sandbox, bucket, image, "--new-upload")
    folders = {key.split("/")[0] for key in objects(s3, bucket)}
    assert len(folders) == 2
