"""The background half of a conversion task: what the real importer does after the API call.

Steps, each able to end the task ``cancelled`` with a status message naming the cause:
fetch the manifest through its URL -> check it -> wait until every head-url answers with the part's
size -> GET every part through its get-url into one temporary file (1 MiB chunks, length checked
against the byte-range, BytesConverted advancing) -> check the reassembled image (size, format as
declared, importable, fits the volume) -> create the volume (and attach it to the instance) ->
``completed``. A CancelConversionTask or the task's expiry (by the sandbox clock) stops it at the
next chunk or poll.

Waiting: a manifest or part that is not there (404) is waited for, like AWS does, until the task
expires; ``ImporterSettings.part_wait`` (``MANIFESTKIT_SANDBOX_PART_WAIT`` seconds, real time)
gives up sooner, naming the missing object. Answers that cannot get better by waiting (403: bad
signature, expired URL, wrong method) cancel the task at once.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from manifestkit.errors import ManifestError
from manifestkit.images.info import ImageInfo
from manifestkit.manifest import (
    ManifestHeader,
    ManifestPart,
    errors_only,
    iter_manifest,
    validate_manifest,
)
from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url
from manifestkit.sandbox import import_tasks as tasks
from manifestkit.sandbox.import_http import CHUNK, FetchError, HttpClient
from manifestkit.sandbox.import_tasks import TaskSnapshot, TaskStore
from manifestkit.sizes import GiB

log = logging.getLogger(__name__)

ENV_PART_WAIT = "MANIFESTKIT_SANDBOX_PART_WAIT"
ENV_PART_DELAY = "MANIFESTKIT_SANDBOX_PART_DELAY"
ENV_POLL_INTERVAL = "MANIFESTKIT_SANDBOX_POLL_INTERVAL"
#: design.md §4 / the manifest writers: file-format spellings accepted for each API Format
_FILE_FORMATS = {"VMDK": {"VMDK"}, "VHD": {"VHD", "VPC"}, "RAW": {"RAW"}}


@dataclass(frozen=True)
class ImporterSettings:
    """Sandbox knobs (not part of EC2): how long to wait, how fast to go."""

    #: real seconds to wait for a missing manifest or part before cancelling; None = until expiry
    part_wait: float | None = None
    #: real seconds to pause after each part (pacing, so a test can cancel mid-transfer)
    part_delay: float = 0.0
    #: real seconds between polls of missing objects and of the sandbox clock
    poll_interval: float = 0.2
    lifetime: timedelta = tasks.TASK_LIFETIME
    max_active: int = tasks.MAX_ACTIVE_TASKS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ImporterSettings:
        env = os.environ if environ is None else environ

        def number(name: str) -> float | None:
            raw = env.get(name, "").strip()
            if not raw:
                return None
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number of seconds") from None
            if value < 0:
                raise ValueError(f"{name}={raw!r} must not be negative")
            return value

        defaults = cls()
        poll = number(ENV_POLL_INTERVAL)
        return cls(
            part_wait=number(ENV_PART_WAIT),
            part_delay=number(ENV_PART_DELAY) or 0.0,
            poll_interval=defaults.poll_interval if poll is None else max(0.01, poll),
        )


class ImportProblem(Exception):
    """The service gives up: the task ends ``cancelled`` with this status message."""


class StopRequested(Exception):
    """CancelConversionTask arrived: finish the cancel."""


@dataclass(frozen=True)
class ConversionEnvironment:
    store: TaskStore
    #: the sandbox clock (aware datetime); governs expiry
    clock: Callable[[], datetime]
    settings: ImporterSettings
    #: create the EC2 volume for a task that converted (attach it for ImportInstance); -> volume id
    finish: Callable[[TaskSnapshot], str]
    #: remove what a cancelled task leaves behind (the ImportInstance instance)
    discard: Callable[[TaskSnapshot], None]
    inspect: Callable[[Path], ImageInfo]
    #: the sandbox is stopping: return at the next checkpoint, leaving the task as it is
    stopping: threading.Event = field(default_factory=threading.Event)
    http: HttpClient = field(default_factory=HttpClient)
    temp_dir: str | None = None


class _Run:
    """One task's conversion; ``run()`` never raises."""

    def __init__(self, task_id: str, env: ConversionEnvironment) -> None:
        self.task_id = task_id
        self.env = env
        self.stop = env.store.cancel_event(task_id)
        self.started = time.monotonic()

    # -- the steps --------------------------------------------------------------------------

    def run(self) -> None:
        try:
            with tempfile.TemporaryDirectory(prefix="mk-import-", dir=self.env.temp_dir) as tmp:
                self._convert(Path(tmp))
        except StopRequested:
            self._end_cancelled(None)
        except ImportProblem as problem:
            self._end_cancelled(str(problem))
        except Exception:  # the task must end; the sandbox log keeps the traceback
            log.exception("conversion task %s failed", self.task_id)
            self._end_cancelled("ServerError: the sandbox importer failed (see the sandbox log)")

    def _convert(self, tmp: Path) -> None:
        task = self._snapshot()
        manifest_path = tmp / "manifest.xml"
        self._fetch_manifest(task, manifest_path)
        self._check_manifest(task, manifest_path)
        self._wait_for_parts(manifest_path)
        image_path = tmp / "image"
        self._download(task, manifest_path, image_path)
        if self.env.store.update(self.task_id, tasks.begin_final_transfer).state != tasks.ACTIVE:
            raise StopRequested
        self._check_image(task, image_path)
        volume_id = self.env.finish(self._snapshot())
        self.env.store.update(self.task_id, tasks.completed(volume_id))

    def _fetch_manifest(self, task: TaskSnapshot, path: Path) -> None:
        url = task.disk.manifest_url
        while True:
            self._checkpoint()
            try:
                with self.env.http.get(url) as response, open(path, "wb") as out:
                    _copy(response, out, self._checkpoint)
                return
            except FetchError as error:
                if error.status != 404 or self._gave_up_waiting():
                    if error.status == 404:
                        raise ImportProblem(
                            "ClientError: Manifest file not found at its import manifest URL "
                            f"(waited {self._waited():.0f} s)"
                        ) from None
                    raise ImportProblem(
                        f"ClientError: Manifest file could not be retrieved: {error}"
                    ) from None
            self._pause()

    def _check_manifest(self, task: TaskSnapshot, path: Path) -> ManifestHeader:
        """The manifest module's XSD + rule check; URLs are not judged here: S3 judges them."""
        try:
            problems = errors_only(validate_manifest(path))
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise ImportProblem(
                    f"ClientError: Manifest file could not be validated: {problems[0]}{more}"
                )
            header, parts = iter_manifest(path)
            _drain(parts)
        except ManifestError as error:
            raise ImportProblem(
                f"ClientError: Manifest file could not be validated: {error.message}"
            ) from None
        self._checkpoint()
        if header.size != task.disk.bytes:
            raise ImportProblem(
                f"ClientError: The manifest's import size ({header.size} bytes) does not match "
                f"the image size in the request ({task.disk.bytes} bytes)"
            )
        if header.file_format.upper() not in _FILE_FORMATS[task.disk.format]:
            raise ImportProblem(
                f"ClientError: The manifest's file-format ({header.file_format}) does not match "
                f"the format in the request ({task.disk.format})"
            )
        return header

    def _wait_for_parts(self, manifest_path: Path) -> None:
        """Every head-url must answer 200 with the part's length; 404s are waited for.

        Only the indices of missing parts are kept between passes (bounded memory for 100k parts).
        """
        missing = self._head_pass(manifest_path, None)
        while missing:
            if self._gave_up_waiting():
                first = next(p for p in _parts(manifest_path) if p.index == missing[0])
                raise ImportProblem(
                    f"ClientError: Part {first.index} ({first.key}) not found: its head-url "
                    f"answered 404 for {self._waited():.0f} s"
                    + (f" ({len(missing)} parts missing)" if len(missing) > 1 else "")
                )
            self._pause()
            missing = self._head_pass(manifest_path, set(missing))

    def _head_pass(self, manifest_path: Path, only: set[int] | None) -> list[int]:
        """HEAD the parts (all, or the indices in ``only``); -> indices still answering 404."""
        missing: list[int] = []
        for part in _parts(manifest_path):
            if only is not None and part.index not in only:
                continue
            self._checkpoint()
            try:
                answer = self.env.http.head(part.head_url)
            except FetchError as error:
                raise ImportProblem(f"ClientError: Part {part.index}: head-url: {error}") from None
            if answer.status == 404:
                missing.append(part.index)
                continue
            if answer.status != 200:
                raise ImportProblem(
                    f"ClientError: Part {part.index}: head-url answered HTTP {answer.status}"
                    + self._why_refused(part.head_url, answer.status)
                )
            if answer.content_length is not None and answer.content_length != part.size:
                raise ImportProblem(_size_mismatch(part, answer.content_length))
        return missing

    def _download(self, task: TaskSnapshot, manifest_path: Path, image_path: Path) -> None:
        done = 0
        with open(image_path, "wb") as out:
            for part in _parts(manifest_path):
                self._checkpoint()
                out.seek(part.start)
                try:
                    with self.env.http.get(part.get_url) as response:
                        length = response.headers.get("Content-Length")
                        if length is not None and int(length) != part.size:
                            raise ImportProblem(_size_mismatch(part, int(length)))
                        got = _copy(response, out, self._checkpoint, limit=part.size + 1)
                except FetchError as error:
                    raise ImportProblem(
                        f"ClientError: Part {part.index}: get-url: {error}"
                    ) from None
                if got != part.size:
                    raise ImportProblem(_size_mismatch(part, got))
                done += got
                self.env.store.update(self.task_id, tasks.progressed(done))
                if self.env.settings.part_delay:
                    self._pause(self.env.settings.part_delay)
        actual = image_path.stat().st_size
        if actual != task.disk.bytes:
            raise ImportProblem(
                f"ClientError: The reassembled image is {actual} bytes, not {task.disk.bytes}"
            )

    def _check_image(self, task: TaskSnapshot, image_path: Path) -> None:
        try:
            info = self.env.inspect(image_path)
        except Exception as exc:  # the image engineer's errors: unreadable/malformed input
            raise ImportProblem(f"ClientError: The disk image could not be read: {exc}") from None
        message = image_problem(info, task.disk.format, task.disk.volume_gib)
        if message:
            raise ImportProblem(message)

    def _why_refused(self, url: str, status: int) -> str:
        """A HEAD answer has no body: say whether the URL had expired by the sandbox clock."""
        if status != 403:
            return ""
        try:
            expired = parse_presigned_url(url).is_expired(self.env.clock())
        except PresignedUrlError:
            return ": AccessDenied"
        return ": AccessDenied: Request has expired" if expired else ": AccessDenied"

    # -- waiting, cancelling, ending ---------------------------------------------------------

    def _snapshot(self) -> TaskSnapshot:
        task = self.env.store.get(self.task_id)
        assert task is not None  # the store never forgets a task
        return task

    def _checkpoint(self) -> None:
        if self.stop.is_set() or self.env.stopping.is_set():
            raise StopRequested
        now = self.env.clock()
        task = self.env.store.update(self.task_id, tasks.expire_if_due(now))
        if task.state != tasks.ACTIVE:
            raise StopRequested

    def _pause(self, seconds: float | None = None) -> None:
        self.stop.wait(self.env.settings.poll_interval if seconds is None else seconds)
        self._checkpoint()

    def _waited(self) -> float:
        return time.monotonic() - self.started

    def _gave_up_waiting(self) -> bool:
        limit = self.env.settings.part_wait
        return limit is not None and self._waited() >= limit

    def _end_cancelled(self, message: str | None) -> None:
        """A service-side problem (message) or a user's cancel (None) -> ``cancelled``."""
        if message is not None:
            self.env.store.update(self.task_id, tasks.service_cancelled(message))
        self.env.store.update(self.task_id, tasks.finish_cancel)
        task = self._snapshot()
        if task.state == tasks.CANCELLED:
            try:
                self.env.discard(task)
            except Exception:
                log.exception("cleaning up cancelled task %s failed", self.task_id)


def run_conversion(task_id: str, env: ConversionEnvironment) -> None:
    """The body of a task's background thread."""
    _Run(task_id, env).run()


def _copy(source: Any, out: Any, checkpoint: Callable[[], None], limit: int | None = None) -> int:
    """Stream ``source`` to ``out`` in 1 MiB chunks, at most ``limit`` bytes; -> bytes copied."""
    copied = 0
    while limit is None or copied < limit:
        want = CHUNK if limit is None else min(CHUNK, limit - copied)
        chunk = source.read(want)
        if not chunk:
            break
        out.write(chunk)
        copied += len(chunk)
        checkpoint()
    return copied


def _size_mismatch(part: ManifestPart, actual: int) -> str:
    return (
        f"ClientError: Part {part.index}: size mismatch: byte-range {part.start}-{part.end} is "
        f"{part.size} bytes, the object {part.key} has {actual}"
    )


def _parts(manifest_path: Path) -> Iterator[ManifestPart]:
    """The manifest's parts, streamed again from the file (it was validated before)."""
    _, parts = iter_manifest(manifest_path)
    return parts


def _drain(parts: Iterator[ManifestPart]) -> None:
    for _ in parts:
        pass


def image_problem(info: ImageInfo, declared_format: str, volume_gib: int) -> str | None:
    """The status message AWS would give for this reassembled image, or None when it imports."""
    if info.format != declared_format:
        return (
            f"ClientError: The disk image is {info.format}, not {declared_format} as declared "
            "in the request"
        )
    if not info.importable:
        problems = " ".join(info.problems)
        if info.format == "VMDK" and info.subformat != "streamOptimized" and _is_sparse(info):
            # what AWS answers for a monolithicSparse VMDK (design.md §3)
            return "ClientError: File uses unsupported compression algorithm 0"
        if info.format == "VHD" and "footer" in problems.lower():
            return "ClientError: Footers not identical"
        return "ClientError: " + (problems or f"{info.format} {info.subformat} cannot be imported")
    if info.capacity_bytes > volume_gib * GiB:
        return (
            f"ClientError: The disk image's capacity ({info.capacity_bytes} bytes) does not fit "
            f"in the {volume_gib} GiB volume"
        )
    return None


def _is_sparse(info: ImageInfo) -> bool:
    details = dict(info.details)
    algorithm = details.get("compress_algorithm", details.get("compressAlgorithm"))
    if algorithm is not None:
        return algorithm == 0
    return "sparse" in info.subformat.lower()
