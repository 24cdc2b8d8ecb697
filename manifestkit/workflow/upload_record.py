"""The one owner of an upload's local record: finds, checks, creates, updates and completes it.

The upload steps (``workflow.upload``, ``workflow.resume``) talk to the record only through
``UploadRecord``; the file format itself (fields, paths, atomic 0600 writes) is
``workflow.upload_state``'s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import shlex
from pathlib import Path
from typing import Any

from manifestkit.errors import UsageError
from manifestkit.parts import PartPlan
from manifestkit.workflow.upload_state import (
    UploadState,
    find_state,
    new_state,
    state_path_for,
    write_state,
)

__all__ = ["UploadRecord"]


class UploadRecord:
    """The local record of one upload of ``image``: where it is, and what it says once known.

    ``path`` is None for an upload that keeps no record (``record_state=False``, e.g. to
    ``--local``): every update is then a no-op. ``state`` is None until the record is found or
    started.
    """

    def __init__(
        self,
        image: str,
        state_dir: str | None,
        path: Path | None,
        state: UploadState | None = None,
    ) -> None:
        self.image = image
        self.state_dir = state_dir
        self.path = path
        self.state = state

    # -- finding ---------------------------------------------------------------------------

    @classmethod
    def find(cls, image: str, state_dir: str | None) -> UploadRecord | None:
        """The record of ``image``'s last upload, or None when there is none."""
        found = find_state(image, state_dir)
        if found is None:
            return None
        path, state = found
        return cls(image, state_dir, path, state)

    @classmethod
    def for_resume(cls, image: str, state_dir: str | None) -> UploadRecord:
        """The record ``--resume`` continues; UsageError when there is none."""
        record = cls.find(image, state_dir)
        if record is None:
            raise UsageError(
                f"no upload of {image} to resume (no state file found)",
                fix="start it without --resume, or run: manifestkit resume MANIFEST_URL IMAGE",
            )
        return record

    @classmethod
    def for_new_upload(
        cls, image: str, state_dir: str | None, *, enabled: bool = True, replace: bool = False
    ) -> UploadRecord:
        """Where a new upload of ``image`` is recorded (nowhere unless ``enabled``).

        Unless ``replace``, a new upload would overwrite the record of an unfinished one
        (Ctrl-C, a failure, or ``--no-upload``), sending everything again and leaving the parts
        already sent in S3 with nothing left to resume or delete them by: refused, saying how to
        continue or start over.
        """
        if not enabled:
            return cls(image, state_dir, None)
        if not replace:
            previous = cls.find(image, state_dir)
            if previous is not None:
                previous.refuse_replacing_unfinished()
        return cls(image, state_dir, state_path_for(image, state_dir))

    # -- checking --------------------------------------------------------------------------

    @property
    def recorded(self) -> UploadState:
        if self.state is None:
            raise RuntimeError("the upload record has no state yet")  # a bug, not bad input
        return self.state

    @property
    def file(self) -> str | None:
        """The state file's path for the result (None when nothing is recorded)."""
        return None if self.path is None else str(self.path)

    def refuse_replacing_unfinished(self) -> None:
        state = self.recorded
        if state.complete:
            return
        folder = state.key_prefix
        resume = shlex.join(
            ["manifestkit", "upload", self.image, "--resume"]
            + (["--state-dir", self.state_dir] if self.state_dir else [])
        )
        raise UsageError(
            f"{self.image}: an unfinished upload of it to s3://{state.bucket}/{folder} is "
            f"recorded in {self.path}",
            fix=f"continue it with: {resume}; or, to start over, delete {self.path} (the parts "
            "already sent stay in S3 until you delete them)",
        )

    def check_resumable(self, *, bucket: str | None, prefix: str, part_size: int | None) -> None:
        """A resumed upload keeps its recorded bucket, key prefix and part size; one given with
        ``--resume`` that differs is refused rather than silently ignored."""
        state = self.recorded
        asked = {
            "--bucket": (bucket or None, state.bucket),
            "--prefix": (prefix or None, state.prefix),
            "--part-size": (part_size, state.part_size),
        }
        differ = [
            (flag, given, recorded)
            for flag, (given, recorded) in asked.items()
            if given is not None and given != recorded
        ]
        if not differ:
            return
        recorded = " ".join(f"{flag} {value!r}" for flag, _, value in differ)
        given = " ".join(f"{flag} {value!r}" for flag, value, _ in differ)
        raise UsageError(
            f"the upload of {self.image} being resumed ({self.path}) was started with "
            f"{recorded}, not {given}",
            fix=f"leave {', '.join(flag for flag, _, _ in differ)} out (or pass the recorded "
            "values), or start a new upload without --resume",
        )

    def is_of(self, bucket: str, upload_id: str) -> bool:
        state = self.recorded
        return state.bucket == bucket and state.upload_id == upload_id

    # -- writing ---------------------------------------------------------------------------

    def start(
        self,
        source: str,
        plan: PartPlan,
        *,
        bucket: str,
        region: str,
        file_format: str,
        volume_gib: int,
        s3_endpoint_url: str | None,
        expected_bucket_owner: str | None,
        converted: bool = False,
    ) -> None:
        """Record a new upload of ``source`` (the image or its converted copy) before any part
        is sent; the record names the image itself, the file ``--resume`` is given."""
        state = new_state(
            source,
            plan,
            bucket=bucket,
            region=region,
            file_format=file_format,
            volume_gib=volume_gib,
            s3_endpoint_url=s3_endpoint_url,
            expected_bucket_owner=expected_bucket_owner,
        )
        self.state = dataclasses.replace(
            state, image=os.path.abspath(self.image), converted=converted
        )
        self._write()

    def start_streamed(
        self,
        *,
        basename: str,
        prefix: str,
        upload_id: str,
        part_size: int,
        bucket: str,
        region: str,
        file_format: str,
        volume_gib: int,
        s3_endpoint_url: str | None,
        expected_bucket_owner: str | None,
        stream: dict[str, Any],
    ) -> None:
        """Record a new streamed upload (``workflow.stream_upload``) before any part is sent: its
        size is not known yet (0 until ``complete``); ``stream`` says what must not change."""
        st = os.stat(self.image)
        self.state = UploadState(
            image=os.path.abspath(self.image),
            file_bytes=0,
            mtime_ns=st.st_mtime_ns,
            bucket=bucket,
            prefix=prefix,
            upload_id=upload_id,
            part_size=part_size,
            basename=basename,
            region=region,
            file_format=file_format,
            volume_gib=volume_gib,
            s3_endpoint_url=s3_endpoint_url,
            expected_bucket_owner=expected_bucket_owner,
            started_at=dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
            converted=True,
            stream=stream,
        )
        self._write()

    def complete(self, *, file_bytes: int | None = None, volume_gib: int | None = None) -> None:
        """The upload's parts, verification and manifest are all in place (a streamed upload
        says its size and volume now)."""
        changes: dict[str, Any] = {"complete": True}
        if file_bytes is not None:
            changes["file_bytes"] = file_bytes
        if volume_gib is not None:
            changes["volume_gib"] = volume_gib
        self.state = dataclasses.replace(self.recorded, **changes)
        self._write()

    def _write(self) -> None:
        if self.path is not None:
            write_state(self.path, self.recorded)
