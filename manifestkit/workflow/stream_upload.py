"""Convert while uploading (issue 13): a disk streamed into the parts of an upload, no copy.

``upload --convert`` of an image EC2 cannot take as it is (monolithicSparse or flat VMDK, VHD,
RAW, a whole disk given as a block device) runs the streamOptimized writer
(``convert.streamopt.StreamOptimizedStream``) and cuts its bytes into parts as they come
(``s3.stream_parts.StreamedUpload``): one pass over the disk, nothing written locally, memory
bounded by the part buffers and the deflate pool (the formula is in ``s3.stream_parts``). The
converted file's size is known only when the writer ends; then the verification pass and the
manifest run as for any upload (parts -> verification -> manifest: the importer never sees a
half-written upload).

Resume: the writer's bytes are a function of the disk's content and ``ConverterSettings`` (its
descriptor ids derive from the source's identity), so a resumed upload converts again and sends
only the parts that are missing or whose MD5 differs. The record keeps the source's identity (size,
mtime, device and inode) and the converter's settings; a resume refuses when any of them changed.

A RAW disk can also come from a pipe (``-``, standard input): its bytes are the parts, with no
conversion; such an upload keeps no record and cannot be resumed (the pipe cannot be read again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import shlex
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import manifestkit
from manifestkit.aws import AwsSettings
from manifestkit.convert.streamopt import (
    CONVERTER_ID,
    DEFAULT_LEVEL,
    StreamOptimizedStream,
)
from manifestkit.errors import ImageError, UsageError
from manifestkit.images.blocks.device import check_not_mounted
from manifestkit.images.blocks.disk import SECTOR, VirtualDisk
from manifestkit.images.rules import check_import_size, volume_gib_for
from manifestkit.parts import DEFAULT_PART_SIZE
from manifestkit.progress import NoProgress, Progress
from manifestkit.s3.part_upload import default_workers, list_existing
from manifestkit.s3.pool import CancelToken
from manifestkit.s3.stream_parts import StreamedUpload
from manifestkit.workflow.upload_state import UploadState

log = logging.getLogger("manifestkit")

#: the argument that names standard input as the image
STDIN = "-"
#: the key name of a disk read from a pipe
STDIN_BASENAME = "stdin.raw"
#: how much of the pipe one read asks for
_PIPE_READ = 1 << 20

__all__ = [
    "STDIN",
    "ConverterSettings",
    "SourceIdentity",
    "resume_streamed",
    "upload_stdin",
    "upload_streamed",
]


@dataclass(frozen=True)
class SourceIdentity:
    """What says "the same source" between a run and its resume: a file's size, mtime, device
    and inode; a block device's size and device number (and its node's mtime and inode)."""

    kind: str  # "file" | "device"
    size: int
    mtime_ns: int
    device: int
    inode: int

    @classmethod
    def of(cls, path: str, size: int) -> SourceIdentity:
        st = os.stat(path)
        if stat.S_ISBLK(st.st_mode):
            return cls("device", size, st.st_mtime_ns, st.st_rdev, st.st_ino)
        return cls("file", size, st.st_mtime_ns, st.st_dev, st.st_ino)

    def changes(self, now: SourceIdentity) -> list[str]:
        """What differs, in words (empty: the same source)."""
        said = {
            "kind": "it is a {now} now, it was a {then}",
            "size": "its size is {now} bytes, it was {then}",
            "mtime_ns": "it was modified since",
            "device": "it is on another device",
            "inode": "it is another file (inode {then} then, {now} now)",
        }
        return [
            text.format(now=getattr(now, name), then=getattr(self, name))
            for name, text in said.items()
            if getattr(now, name) != getattr(self, name)
        ]


@dataclass(frozen=True)
class ConverterSettings:
    """Everything besides the disk's content that the converted bytes depend on."""

    #: the file name the descriptor's extent line names (also the keys' basename)
    name: str
    level: int = DEFAULT_LEVEL
    adapter_type: str = "lsilogic"
    converter: str = CONVERTER_ID
    manifestkit_version: str = manifestkit.__version__


def stream_record(identity: SourceIdentity, converter: ConverterSettings) -> dict[str, Any]:
    """The ``stream`` entry of the upload's record (JSON-ready)."""
    return {
        "source": dataclasses.asdict(identity),
        "converter": dataclasses.asdict(converter),
    }


def _from_record(record: Any) -> tuple[SourceIdentity, ConverterSettings]:
    """The record's ``stream`` entry, checked field by field (state files are untrusted)."""
    try:
        source, converter = record["source"], record["converter"]
        identity = SourceIdentity(**source)
        settings = ConverterSettings(**converter)
    except (TypeError, KeyError) as exc:
        raise UsageError(
            f"the upload record's stream entry is incomplete or damaged ({exc})",
            fix="start a new upload without --resume",
        ) from exc
    types = {"kind": str, "size": int, "mtime_ns": int, "device": int, "inode": int}
    for name, kind in types.items():
        if not isinstance(getattr(identity, name), kind):
            raise UsageError(
                f"the upload record's source {name} is not a {kind.__name__}",
                fix="start a new upload without --resume",
            )
    for name in ("name", "adapter_type", "converter", "manifestkit_version"):
        if not isinstance(getattr(settings, name), str):
            raise UsageError(
                f"the upload record's converter {name} is not text",
                fix="start a new upload without --resume",
            )
    if not isinstance(settings.level, int) or not 0 <= settings.level <= 9:
        raise UsageError("the upload record's converter level is not 0-9", fix="start a new upload")
    if "/" in settings.name or not settings.name:
        raise UsageError("the upload record's converter name is not a file name", fix="start anew")
    return identity, settings


def _seed(identity: SourceIdentity, converter: ConverterSettings, upload_id: str) -> bytes:
    """The bytes the descriptor's ids derive from: the same on resume, different per upload."""
    return json.dumps(
        [dataclasses.asdict(identity), dataclasses.asdict(converter), upload_id], sort_keys=True
    ).encode()


def converted_name(image: str) -> str:
    """The converted image's file name: the source's, ending in ``.vmdk`` (``sdb.vmdk``)."""
    stem = os.path.splitext(os.path.basename(os.path.abspath(image)))[0] or "disk"
    return f"{stem}.vmdk"


def _open_source(image: str, *, force: bool) -> tuple[VirtualDisk, SourceIdentity]:
    from manifestkit.images.blocks.open import open_disk

    check_not_mounted(image, force=force)
    disk = open_disk(image)
    try:
        if disk.capacity == 0:
            raise ImageError(f"{image}: the disk is empty (0 bytes)", fix="give the disk image")
        identity = SourceIdentity.of(image, disk.capacity)
    except BaseException:
        disk.close()
        raise
    return disk, identity


def _requested_volume(requested: int | None, capacity: int) -> int:
    from manifestkit.manifest.build import MAX_VOLUME_GIB

    least = volume_gib_for(capacity)
    if requested is None:
        return least
    if requested > MAX_VOLUME_GIB:
        raise UsageError(
            f"--volume-size {requested} GiB is above the EBS maximum of {MAX_VOLUME_GIB} GiB",
            fix=f"give at most {MAX_VOLUME_GIB}",
        )
    if requested < least:
        raise UsageError(
            f"--volume-size {requested} GiB is smaller than the disk's {least} GiB",
            fix=f"give at least {least}",
        )
    return requested


def _final_volume(volume_gib: int, file_bytes: int, notify: Callable[[str], None]) -> int:
    """The volume must hold the uploaded file too (design.md §2); a converted disk of
    incompressible data is a little larger than the disk."""
    least = volume_gib_for(file_bytes)
    if least > volume_gib:
        notify(
            f"the uploaded image is {file_bytes} bytes, more than {volume_gib} GiB: the volume "
            f"size is {least} GiB"
        )
        return least
    return volume_gib


def upload_streamed(
    request: Any,
    settings: AwsSettings,
    *,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    notify: Callable[[str], None] | None = None,
    now: dt.datetime | None = None,
) -> Any:
    """A new ``upload --convert`` of ``request.image`` converted on the fly (module doc)."""
    from manifestkit.workflow.upload import _require_bucket, connect_for
    from manifestkit.workflow.upload_record import UploadRecord

    progress = progress or NoProgress()
    notify = notify or log.info
    bucket = _require_bucket(request)
    with UploadRecord.for_new_upload(
        request.image,
        request.state_dir,
        enabled=request.record_state,
        new_upload=request.new_upload,
    ) as record:  # locked: one upload of the image at a time
        from manifestkit.workflow.resume import reuse_recorded_upload

        done = reuse_recorded_upload(
            record, request, settings, progress=progress, cancel=cancel, notify=notify, now=now
        )
        if done is not None:
            return done
        disk, identity = _open_source(request.image, force=request.force)
        with contextlib.closing(disk):
            check_import_size(request.image, disk.capacity)  # before a byte is converted or sent
            volume_gib = _requested_volume(request.volume_gib, disk.capacity)
            conn = connect_for(
                settings,
                request,
                bucket,
                expected_owner=request.bucket_owner,
                create=request.create_bucket,
            )
            converter = ConverterSettings(name=converted_name(request.image))
            record.start_streamed(
                basename=converter.name,
                prefix=request.prefix.strip("/"),
                upload_id=str(uuid.uuid4()),
                part_size=DEFAULT_PART_SIZE if request.part_size is None else request.part_size,
                bucket=bucket,
                region=conn.region,
                file_format="VMDK",
                volume_gib=volume_gib,
                s3_endpoint_url=settings.s3_endpoint_url,
                expected_bucket_owner=request.bucket_owner,
                stream=stream_record(identity, converter),
            )
            notify(
                f"{request.image} is not importable as it is; uploading it converted to a "
                "streamOptimized VMDK, converted while it uploads (no local copy)"
            )
            result = _send(
                conn,
                settings,
                request,
                disk,
                identity,
                converter,
                record.recorded,
                existing=None,
                progress=progress,
                cancel=cancel,
                notify=notify,
                now=now,
            )
            record.complete(file_bytes=result.file_bytes, volume_gib=result.volume_gib)
        return dataclasses.replace(
            result, state_file=record.file, converted=True, previous_state_file=record.previous_file
        )


def resume_streamed(
    request: Any,
    settings: AwsSettings,
    record: Any,
    *,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    notify: Callable[[str], None] | None = None,
    now: dt.datetime | None = None,
) -> Any:
    """``upload IMAGE --resume`` of a streamed upload: convert again, send what is missing."""
    from manifestkit.workflow.upload import connect_for

    progress = progress or NoProgress()
    notify = notify or log.info
    state = record.recorded
    recorded_identity, converter = _from_record(state.stream)
    expected = dataclasses.replace(
        converter, converter=CONVERTER_ID, manifestkit_version=manifestkit.__version__
    )
    if converter != expected:
        raise UsageError(
            f"the upload of {request.image} being resumed was converted by {converter.converter} "
            f"(manifestkit {converter.manifestkit_version}); this is {expected.converter} "
            f"(manifestkit {expected.manifestkit_version}), whose bytes may differ",
            fix="start a new upload without --resume (or resume with the same manifestkit)",
        )
    disk, identity = _open_source(request.image, force=request.force)
    with contextlib.closing(disk):
        changed = recorded_identity.changes(identity)
        if changed:
            raise ImageError(
                f"{request.image} changed since the upload started: {'; '.join(changed)}",
                fix="start a new upload without --resume (delete the record "
                f"{record.file} first; the parts already sent stay in S3 until you delete them)",
            )
        notify(
            f"the upload being resumed is of a converted copy of {request.image}, made while "
            "uploading: converting again; only the parts missing or different are sent"
        )
        owner = request.bucket_owner or state.expected_bucket_owner
        conn = connect_for(settings, request, state.bucket, expected_owner=owner)
        existing = list_existing(conn.s3, state.bucket, state.key_prefix, expected_owner=owner)
        result = _send(
            conn,
            settings,
            dataclasses.replace(request, bucket_owner=owner),
            disk,
            identity,
            converter,
            state,
            existing=existing,
            progress=progress,
            cancel=cancel,
            notify=notify,
            now=now,
        )
        record.complete(file_bytes=result.file_bytes, volume_gib=result.volume_gib)
    return dataclasses.replace(result, state_file=record.file, converted=True)


def _send(
    conn: Any,
    settings: AwsSettings,
    request: Any,
    disk: VirtualDisk,
    identity: SourceIdentity,
    converter: ConverterSettings,
    state: UploadState,
    *,
    existing: dict[str, Any] | None,
    progress: Progress,
    cancel: CancelToken | None,
    notify: Callable[[str], None],
    now: dt.datetime | None,
) -> Any:
    """Convert ``disk`` into the parts, then verification and manifest (``finish_upload``)."""
    from manifestkit.workflow.upload import Target, finish_upload

    cancel = cancel or CancelToken()
    uploader = StreamedUpload(
        conn.s3,
        state.bucket,
        basename=converter.name,
        prefix=state.prefix,
        upload_id=state.upload_id,
        part_size=state.part_size,
        workers=request.workers or default_workers(),
        part_retries=request.part_retries,
        expected_owner=request.bucket_owner,
        dedupe_zeros=request.dedupe_zeros,
        existing=existing,
        cancel=cancel,
    )
    stream = StreamOptimizedStream(
        disk,
        name=converter.name,
        level=converter.level,
        adapter_type=converter.adapter_type,
        progress=progress,
        identity=_seed(identity, converter, state.upload_id),
    )
    chunks = iter(stream)
    try:
        with contextlib.closing(chunks):  # type: ignore[type-var]
            stats = uploader.run(chunks)
    except ImageError as exc:
        # the disk failed mid-read (an I/O error, a device that shrank): the parts sent so far
        # are kept, no manifest is written; say how to go on once the disk reads again
        if request.record_state:
            raise ImageError(exc.message, fix=_resume_fix(request, exc.fix)) from exc
        raise
    plan = uploader.plan
    assert plan is not None  # set by run
    target = Target(
        state.bucket,
        plan,
        "VMDK",
        _final_volume(state.volume_gib, plan.file_bytes, notify),
        request.bucket_owner,
    )
    return finish_upload(
        conn,
        settings,
        target,
        request,
        stats,
        uploader.md5_hex,
        existing=existing,
        progress=progress,
        cancel=cancel,
        now=now,
    )


def _resume_fix(request: Any, fix: str | None) -> str:
    words = ["manifestkit", "upload", request.image, "--resume"]
    if request.state_dir:
        words += ["--state-dir", request.state_dir]
    first = fix or "check the disk (dmesg)"
    return (
        f"{first}; nothing was passed off as complete (no manifest); once the disk reads "
        f"again, continue with: {shlex.join(words)}"
    )


# -- a RAW disk from a pipe ---------------------------------------------------------------------


def _pipe_chunks(fd: int) -> Iterator[bytes]:
    """The pipe's bytes, 1 MiB reads; a disk ends on a whole sector, so a pipe that stops
    mid-sector was cut short (the tool writing it failed)."""
    total = 0
    while True:
        try:
            chunk = os.read(fd, _PIPE_READ)
        except OSError as exc:
            raise ImageError(
                f"standard input: read error after {total} bytes: {exc.strerror or exc}",
                fix="check the command feeding the pipe, then run the upload again",
            ) from exc
        if not chunk:
            break
        total += len(chunk)
        yield chunk
    if total == 0:
        raise ImageError(
            "standard input: the pipe ended before its first byte",
            fix="check the command feeding the pipe (it wrote nothing)",
        )
    if total % SECTOR:
        raise ImageError(
            f"standard input: the pipe ended after {total} bytes, in the middle of a 512-byte "
            "sector: it was cut short (nothing was passed off as complete: no manifest written)",
            fix="check the command feeding the pipe, then run the upload again (a pipe cannot "
            "be resumed)",
        )


def upload_stdin(
    request: Any,
    settings: AwsSettings,
    *,
    fd: int = 0,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    notify: Callable[[str], None] | None = None,
    now: dt.datetime | None = None,
) -> Any:
    """Upload a RAW disk read from a pipe (``-``): parts as they come, then the manifest.

    No record is kept and ``--resume`` is refused: the pipe cannot be read again.
    """
    from manifestkit.workflow.upload import Target, _require_bucket, connect_for, finish_upload

    progress = progress or NoProgress()
    notify = notify or log.info
    if request.resume:
        raise UsageError(
            "an upload from standard input cannot be resumed (the pipe cannot be read again)",
            fix="run the whole upload again",
        )
    if request.convert:
        raise UsageError(
            "--convert cannot read standard input: the converted header needs the disk's size "
            "before its first byte",
            fix="upload the pipe as RAW (without --convert), or give the device or file itself",
        )
    if request.format not in (None, "RAW"):
        raise UsageError(
            f"--format {request.format}: standard input is uploaded as RAW", fix="drop --format"
        )
    bucket = _require_bucket(request)
    volume_gib = request.volume_gib
    if volume_gib is not None:
        volume_gib = _requested_volume(volume_gib, 1)
    conn = connect_for(
        settings, request, bucket, expected_owner=request.bucket_owner, create=request.create_bucket
    )
    cancel = cancel or CancelToken()
    uploader = StreamedUpload(
        conn.s3,
        bucket,
        basename=STDIN_BASENAME,
        prefix=request.prefix.strip("/"),
        upload_id=str(uuid.uuid4()),
        part_size=DEFAULT_PART_SIZE if request.part_size is None else request.part_size,
        workers=request.workers or default_workers(),
        part_retries=request.part_retries,
        expected_owner=request.bucket_owner,
        dedupe_zeros=request.dedupe_zeros,
        progress=progress,
        cancel=cancel,
    )
    progress.start(0, "upload from pipe")
    try:
        stats = uploader.run(_pipe_chunks(fd))
    finally:
        progress.close()
    plan = uploader.plan
    assert plan is not None
    target = Target(
        bucket,
        plan,
        "RAW",
        _final_volume(volume_gib or volume_gib_for(plan.file_bytes), plan.file_bytes, notify),
        request.bucket_owner,
    )
    result = finish_upload(
        conn,
        settings,
        target,
        request,
        stats,
        uploader.md5_hex,
        existing=None,
        progress=progress,
        cancel=cancel,
        now=now,
    )
    return dataclasses.replace(result, state_file=None, converted=False)
