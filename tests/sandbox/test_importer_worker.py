"""The conversion worker against a fake S3 (no server): paths the HTTP tests cannot force, such
as an object that changes between its HEAD and its GET, or the sandbox stopping mid-task."""

from __future__ import annotations

import datetime as dt
import io
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from manifestkit.images.info import ImageInfo
from manifestkit.manifest import build_manifest_file
from manifestkit.parts import PartPlan
from manifestkit.s3.presign import Presigner
from manifestkit.sandbox import import_tasks as tasks
from manifestkit.sandbox.import_http import FetchError, HeadResult
from manifestkit.sandbox.import_requests import DiskImageSpec, ImportVolumeRequest
from manifestkit.sandbox.import_worker import (
    ConversionEnvironment,
    ImporterSettings,
    run_conversion,
)

ENDPOINT = "http://127.0.0.1:9"
NOW = dt.datetime.now(dt.timezone.utc)


class Creds:
    access_key = "testing"
    secret_key = "testing"
    token = None


class FakeS3:
    """Objects by path; ``get_override`` serves other bytes on GET than HEAD reports."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.get_override: dict[str, bytes] = {}
        self.gets: list[str] = []

    def head(self, url: str) -> HeadResult:
        data = self.objects.get(urlsplit(url).path)
        return HeadResult(404, None) if data is None else HeadResult(200, len(data))

    @contextmanager
    def get(self, url: str) -> Any:
        path = urlsplit(url).path
        self.gets.append(path)
        data = self.get_override.get(path, self.objects.get(path))
        if data is None:
            raise FetchError(404, "NoSuchKey: The specified key does not exist.")
        response = io.BytesIO(data)
        response.headers = {}  # type: ignore[attr-defined]
        yield response


def setup(tmp_path: Path, data: bytes, part_size: int) -> tuple[FakeS3, PartPlan, str]:
    plan = PartPlan(file_bytes=len(data), part_size=part_size, basename="disk.raw")
    presigner = Presigner(Creds(), "us-east-1", endpoint_url=ENDPOINT, now=NOW)
    s3 = FakeS3()
    for part in plan:
        s3.objects[f"/bkt/{part.key}"] = data[part.start : part.end + 1]
    manifest = tmp_path / "m.xml"
    build_manifest_file(
        manifest, plan=plan, file_format="RAW", bucket="bkt", presigner=presigner, volume_gib=1
    )
    s3.objects[f"/bkt/{plan.manifest_key}"] = manifest.read_bytes()
    return s3, plan, presigner.url("GET", "bkt", plan.manifest_key)


def start(
    s3: FakeS3, url: str, size: int, **settings: Any
) -> tuple[tasks.TaskStore, str, ConversionEnvironment, list[str]]:
    store = tasks.TaskStore()
    request = ImportVolumeRequest(
        availability_zone="us-east-1a",
        disk=DiskImageSpec(format="RAW", bytes=size, manifest_url=url, volume_gib=1),
    )
    task = tasks.new_snapshot(
        request,
        account_id="1",
        region="us-east-1",
        now=NOW,
        availability_zone="us-east-1a",
        availability_zone_id="use1-az6",
    )
    store.add(task)
    finished: list[str] = []

    def inspect(path: Path) -> ImageInfo:
        size_now = path.stat().st_size
        return ImageInfo(
            path=str(path),
            format="RAW",
            subformat="raw",
            file_bytes=size_now,
            capacity_bytes=size_now,
            importable=True,
        )

    env = ConversionEnvironment(
        store=store,
        clock=lambda: dt.datetime.now(dt.timezone.utc),
        settings=ImporterSettings(poll_interval=0.01, **settings),
        finish=lambda t: finished.append(t.task_id) or "vol-1",
        discard=lambda t: None,
        inspect=inspect,
        http=s3,  # type: ignore[arg-type]
    )
    return store, task.task_id, env, finished


def test_reassembles_every_part_in_order(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    s3, plan, url = setup(tmp_path, data, 1000)
    store, task_id, env, finished = start(s3, url, len(data))
    seen: list[bytes] = []
    env = ConversionEnvironment(
        **{
            **env.__dict__,
            "inspect": lambda p: (
                seen.append(p.read_bytes())
                or ImageInfo(
                    path=str(p),
                    format="RAW",
                    subformat="raw",
                    file_bytes=len(data),
                    capacity_bytes=len(data),
                    importable=True,
                )
            ),
        }
    )
    run_conversion(task_id, env)
    task = store.get(task_id)
    assert task is not None and (task.state, task.volume_id) == ("completed", "vol-1")
    assert seen == [data]  # the image the importer checked is byte-identical to the upload
    assert [p for p in s3.gets if "part" in p] == [f"/bkt/{part.key}" for part in plan]


def test_object_shorter_on_get_than_on_head_is_a_size_mismatch(tmp_path: Path) -> None:
    data = b"x" * 5000
    s3, plan, url = setup(tmp_path, data, 2000)
    s3.get_override[f"/bkt/{plan.part(1).key}"] = b"x" * 1999
    store, task_id, env, finished = start(s3, url, len(data))
    run_conversion(task_id, env)
    task = store.get(task_id)
    assert task is not None and task.state == "cancelled"
    assert "Part 1: size mismatch" in task.status_message and "1999" in task.status_message
    assert finished == []


def test_sandbox_stopping_ends_the_worker_and_leaves_the_task(tmp_path: Path) -> None:
    data = b"y" * 3000
    s3, plan, url = setup(tmp_path, data, 1000)
    del s3.objects[f"/bkt/{plan.part(2).key}"]  # waits for it (no part_wait: until expiry)
    store, task_id, env, finished = start(s3, url, len(data))
    stopping = threading.Event()
    env = ConversionEnvironment(**{**env.__dict__, "stopping": stopping})
    worker = threading.Thread(target=run_conversion, args=(task_id, env))
    worker.start()
    worker.join(0.3)
    assert worker.is_alive()  # still waiting for part 2
    stopping.set()
    worker.join(5)
    assert not worker.is_alive()
    task = store.get(task_id)
    assert task is not None and task.state == "active" and finished == []


@pytest.mark.parametrize("declared", [4999, 5001])
def test_declared_size_must_match_the_manifest(tmp_path: Path, declared: int) -> None:
    s3, plan, url = setup(tmp_path, b"z" * 5000, 2000)
    store, task_id, env, _ = start(s3, url, declared)
    run_conversion(task_id, env)
    task = store.get(task_id)
    assert task is not None and task.state == "cancelled"
    assert "5000 bytes" in task.status_message and f"{declared} bytes" in task.status_message
