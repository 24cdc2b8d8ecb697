"""The one owner of an upload's local record: finds, checks, creates, updates and completes it.

The upload steps (``workflow.upload``, ``workflow.resume``) talk to the record only through
``UploadRecord``; the file format itself (fields, paths, atomic 0600 writes) is
``workflow.upload_state``'s.

One process at a time: a record is used under an exclusive ``flock`` of ``<state file>.lock``
(taken before the state file is read, held until the upload ends). The kernel drops the lock
when its holder dies, so a crash or SIGKILL never leaves an upload locked; the lock file itself
is removed by the holder on the way out (a process that locked a file already removed retries on
the new one, so two processes never both hold "the" lock).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import os
import re
import shlex
from pathlib import Path
from types import TracebackType
from typing import Any

from manifestkit.errors import InUseError, UsageError
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
        #: the earlier record a new upload moved aside (``--new-upload``), still findable there
        self.previous_file: str | None = None
        self._lock_fd: int | None = None
        self._lock_path: Path | None = None

    def __enter__(self) -> UploadRecord:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # -- one process at a time -------------------------------------------------------------

    def _lock(self, state_path: Path) -> None:
        lock_path = state_path.with_name(state_path.name + ".lock")
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            while True:
                fd = os.open(
                    lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
                )
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise InUseError(
                        f"{self.image}: another manifestkit process is uploading it (it holds "
                        f"{lock_path})",
                        fix="wait for it to end (or stop it), then run the command again",
                    ) from None
                except BaseException:
                    os.close(fd)
                    raise
                # the holder before us removes the file on its way out: if it did so after we
                # opened it, we hold a lock on a file nobody else will open; lock the new one
                try:
                    now_there = os.stat(lock_path, follow_symlinks=False)
                except FileNotFoundError:
                    now_there = None
                mine = os.fstat(fd)
                if now_there is not None and (now_there.st_dev, now_there.st_ino) == (
                    mine.st_dev,
                    mine.st_ino,
                ):
                    self._lock_fd, self._lock_path = fd, lock_path
                    return
                os.close(fd)
        except OSError as exc:
            raise UsageError(
                f"cannot lock the upload record {lock_path}: {exc.strerror or exc}",
                fix="pass --state-dir DIR with a folder you can write to",
            ) from exc

    def release(self) -> None:
        """Let another process use the record (a crash does the same)."""
        if self._lock_fd is None:
            return
        fd, self._lock_fd = self._lock_fd, None
        # removed while still held: the next process then locks a new file (see _lock)
        with contextlib.suppress(OSError):
            os.unlink(self._lock_path)
        os.close(fd)

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
    def locked(
        cls, image: str, state_dir: str | None, *, ignore_unreadable: bool = False
    ) -> UploadRecord:
        """``image``'s record, locked for this process (InUseError when another holds it),
        with the state found (``state`` None when there is none). Use it in a ``with``.
        ``ignore_unreadable``: a state file that is not a usable one counts as none."""
        path = state_path_for(image, state_dir)
        record = cls(image, state_dir, path)
        record._lock(path)
        try:
            found = find_state(image, state_dir)
        except UsageError:
            if not ignore_unreadable:
                record.release()
                raise
            found = None
        except BaseException:
            record.release()
            raise
        if found is not None:
            record.path, record.state = found
        return record

    @classmethod
    def for_resume(cls, image: str, state_dir: str | None) -> UploadRecord:
        """The record ``--resume`` continues, locked; UsageError when there is none."""
        record = cls.locked(image, state_dir)
        if record.state is None:
            record.release()
            raise UsageError(
                f"no upload of {image} to resume (no state file found)",
                fix="start it without --resume, or run: manifestkit resume MANIFEST_URL IMAGE",
            )
        return record

    @classmethod
    def for_new_upload(
        cls,
        image: str,
        state_dir: str | None,
        *,
        enabled: bool = True,
        new_upload: bool = False,
        replace: bool = False,
    ) -> UploadRecord:
        """The record of ``image`` for an upload that is not ``--resume``, locked.

        ``state`` is the earlier record when the caller has to decide about it: a complete
        upload (``upload`` says it is uploaded already, see ``workflow.upload``). Otherwise the
        record is empty, ready for ``start``. An unfinished earlier upload is refused unless
        ``new_upload`` or ``replace``: a new one would send everything again and leave the
        parts already sent in S3 with nothing to resume or delete them by. With ``new_upload``
        (or ``replace``) the earlier record is moved aside, still findable (``previous_file``).
        Nothing is recorded or locked unless ``enabled``.
        """
        if not enabled:
            return cls(image, state_dir, None)
        record = cls.locked(image, state_dir)
        try:
            if record.state is not None:
                if new_upload or replace:
                    record.move_aside()
                else:
                    record.refuse_replacing_unfinished()
            if record.state is None:
                record.path = state_path_for(image, state_dir)
        except BaseException:
            record.release()
            raise
        return record

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

    def differences(
        self, *, bucket: str | None, prefix: str, part_size: int | None, volume_gib: int | None
    ) -> list[tuple[str, object, object]]:
        """(option, given, recorded) for each option given that differs from the record."""
        state = self.recorded
        asked = {
            "--bucket": (bucket or None, state.bucket),
            "--prefix": (prefix or None, state.prefix),
            "--part-size": (part_size, state.part_size),
            "--volume-size": (volume_gib, state.volume_gib),
        }
        return [
            (flag, given, recorded)
            for flag, (given, recorded) in asked.items()
            if given is not None and given != recorded
        ]

    def check_resumable(
        self,
        *,
        bucket: str | None,
        prefix: str,
        part_size: int | None,
        volume_gib: int | None = None,
    ) -> None:
        """A resumed upload keeps its recorded bucket, key prefix, part size and volume size;
        one given with ``--resume`` that differs is refused rather than silently ignored."""
        differ = self.differences(
            bucket=bucket, prefix=prefix, part_size=part_size, volume_gib=volume_gib
        )
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

    def refuse_lying(self, what: str) -> None:
        """The record says something the image contradicts: it is not this image's record."""
        raise UsageError(
            f"{self.path} does not describe {self.image}: {what}",
            fix=f"delete {self.path} and start a new upload (or, if its parts are in S3, run: "
            "manifestkit resume MANIFEST_URL IMAGE)",
        )

    def move_aside(self) -> None:
        """Keep the earlier record under a name of its own beside it (not overwritten by the
        new upload's record), and forget it here."""
        assert self.path is not None
        state = self.recorded
        stem = self.path.name.removesuffix(".json")
        # the upload id names the file unless the (untrusted) state makes it an odd file name
        tag = state.upload_id
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", tag):
            tag = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        for n in range(100):
            target = self.path.with_name(f"{stem}.{tag}{'' if n == 0 else f'-{n}'}.json")
            try:
                os.link(self.path, target)  # never replaces an earlier one
            except FileExistsError:
                continue
            break
        else:
            raise UsageError(f"cannot find a free name for the earlier record {self.path}")
        os.unlink(self.path)
        self.previous_file = str(target)
        self.state = None

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
        # the plan of a one-byte stream names the parts (as ``StreamedUpload`` does)
        naming = PartPlan(
            file_bytes=1, part_size=part_size, basename=basename, prefix=prefix, upload_id=upload_id
        )
        state = new_state(
            self.image,
            naming,
            bucket=bucket,
            region=region,
            file_format=file_format,
            volume_gib=volume_gib,
            s3_endpoint_url=s3_endpoint_url,
            expected_bucket_owner=expected_bucket_owner,
        )
        self.state = dataclasses.replace(state, file_bytes=0, converted=True, stream=stream)
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
