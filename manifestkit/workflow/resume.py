"""Resuming an upload: from its local record (``upload IMAGE --resume``) or from its manifest
(``resume MANIFEST|URL IMAGE``).

Either way the parts already in the bucket whose size and ETag match the local bytes are kept,
the rest are sent, then the verification pass and the manifest run as for a new upload
(``workflow.upload``'s shared steps). The manifest in the bucket is kept while it still fits the
upload and its URLs live longer than the renew margin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import Callable

from manifestkit.aws import AwsSettings, make_session, region_of
from manifestkit.errors import ImageError, RemoteError, UsageError
from manifestkit.images.info import ImageInfo
from manifestkit.images.reader import stat_regular
from manifestkit.progress import NoProgress, Progress
from manifestkit.s3.bucket_checks import ensure_bucket
from manifestkit.s3.part_upload import DEFAULT_PART_RETRIES, default_workers, list_existing
from manifestkit.s3.pool import CancelToken
from manifestkit.s3.presign import MAX_EXPIRES
from manifestkit.workflow.upload import (
    DEFAULT_RENEW_MARGIN,
    Connection,
    Target,
    UploadRequest,
    UploadResult,
    check_importable,
    connect_for,
    image_for_upload,
    send_parts_and_manifest,
    upload_s3_client,
)
from manifestkit.workflow.upload_record import UploadRecord

__all__ = ["already_uploaded", "continue_recorded", "resume_from_record", "resume_upload"]


def resume_from_record(
    request: UploadRequest,
    settings: AwsSettings,
    *,
    progress: Progress,
    cancel: CancelToken | None,
    notify: Callable[[str], None],
    now: dt.datetime | None,
) -> UploadResult:
    """``upload IMAGE --resume``: continue the upload recorded for ``request.image``."""
    with UploadRecord.for_resume(request.image, request.state_dir) as record:
        record.check_resumable(
            bucket=request.bucket,
            prefix=request.prefix,
            part_size=request.part_size,
            volume_gib=request.volume_gib,
        )
        return continue_recorded(
            record, request, settings, progress=progress, cancel=cancel, notify=notify, now=now
        )


def reuse_recorded_upload(
    record: UploadRecord,
    request: UploadRequest,
    settings: AwsSettings,
    *,
    progress: Progress,
    cancel: CancelToken | None,
    notify: Callable[[str], None],
    now: dt.datetime | None,
) -> UploadResult | None:
    """The start of every new upload (file or streamed) once ``record`` is locked: the recorded
    complete upload of the image when it can serve (see ``already_uploaded``), else None, having
    said where an earlier record moved aside (``--new-upload``, a changed image) is kept."""
    if record.state is not None:  # already_uploaded says itself where a record it moves goes
        return already_uploaded(
            record, request, settings, progress=progress, cancel=cancel, notify=notify, now=now
        )
    if record.previous_file is not None:  # moved aside when the record was opened
        notify(
            f"the record of the earlier upload of {request.image} is kept in {record.previous_file}"
        )
    return None


def already_uploaded(
    record: UploadRecord,
    request: UploadRequest,
    settings: AwsSettings,
    *,
    progress: Progress,
    cancel: CancelToken | None,
    notify: Callable[[str], None],
    now: dt.datetime | None,
) -> UploadResult | None:
    """``upload IMAGE`` when ``record`` (locked) says IMAGE's upload is complete.

    The same image to the same place: that upload is checked as ``--resume`` would (parts
    kept, a manifest with fresh URLs when its URLs expire within the renew margin) and its
    manifest URL is the result; nothing is sent twice. The image changed since: None, with the
    earlier record moved aside (the caller uploads it anew). Options that ask for another
    place or shape: refused, pointing to ``--new-upload``.
    """
    state = record.recorded
    folder = f"s3://{state.bucket}/{state.key_prefix}"
    st = stat_regular(request.image, allow_block=True)
    if state.stream is not None:
        # a streamed conversion records the source's own mtime (the size is the copy's)
        changed = st.st_mtime_ns != state.mtime_ns
    else:
        # a converted temporary copy's mtime says nothing about the image: convert and compare
        changed = not state.converted and (st.st_size, st.st_mtime_ns) != (
            state.file_bytes,
            state.mtime_ns,
        )
    if changed:
        record.move_aside()
        notify(
            f"{request.image} changed since its upload to {folder}; uploading it again (the "
            f"record of the earlier upload is kept in {record.previous_file})"
        )
        return None
    differ = record.differences(
        bucket=request.bucket,
        prefix=request.prefix,
        part_size=request.part_size,
        volume_gib=request.volume_gib,
    )
    if differ:
        recorded = " ".join(f"{flag} {value!r}" for flag, _, value in differ)
        raise UsageError(
            f"{request.image} is uploaded already to {folder} (with {recorded}; recorded in "
            f"{record.path})",
            fix="pass --new-upload to upload a second copy as asked (the record of the first "
            "is kept), or leave the differing options out to use the first",
        )
    if not _manifest_still_there(record, request, settings):
        record.move_aside()
        notify(
            f"the upload of {request.image} to {folder} is no longer in the bucket (deleted); "
            f"uploading it again (its record is kept in {record.previous_file})"
        )
        return None
    notify(
        f"{request.image} is uploaded already to {folder} (recorded in {record.path}); "
        "checking it and printing its manifest URL (--new-upload uploads a second copy)"
    )
    result = continue_recorded(
        record, request, settings, progress=progress, cancel=cancel, notify=notify, now=now
    )
    return dataclasses.replace(result, already_uploaded=True)


def _manifest_still_there(
    record: UploadRecord, request: UploadRequest, settings: AwsSettings
) -> bool:
    """Whether the recorded upload's manifest object is still in its bucket: an upload deleted
    since (``manifestkit delete``, an AMI chain's clean-up) is not "uploaded already", and its
    keys are not used again (a task may still name them)."""
    from botocore.exceptions import ClientError

    state = record.recorded
    owner = request.bucket_owner or state.expected_bucket_owner
    conn = connect_for(settings, request, state.bucket, expected_owner=owner, workers=1)
    extra = {"ExpectedBucketOwner": owner} if owner else {}
    try:
        conn.s3.head_object(Bucket=state.bucket, Key=state.manifest_key, **extra)
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 404:
            return False
        raise RemoteError(
            f"cannot check the recorded upload's manifest s3://{state.bucket}/"
            f"{state.manifest_key}: {exc}",
            fix="check the credentials and the bucket, or pass --new-upload",
        ) from exc
    return True


def _check_against_image(record: UploadRecord, request: UploadRequest, info: ImageInfo) -> None:
    """The record is untrusted input (design.md §4b): what the manifest will say comes from it,
    so each field that describes the image is checked against the image itself."""
    from manifestkit.manifest.build import MAX_VOLUME_GIB

    state = record.recorded
    if info.file_bytes != state.file_bytes:
        what = f"the converted copy of {request.image}" if request.convert else request.image
        raise ImageError(
            f"{what} is {info.file_bytes} bytes but the upload being resumed is of "
            f"{state.file_bytes} bytes: the image changed",
            fix="start a new upload without --resume",
        )
    if info.format != state.file_format:
        record.refuse_lying(f"it records a {state.file_format} image, the image is {info.format}")
    if not MAX_VOLUME_GIB >= state.volume_gib >= info.volume_gib:
        record.refuse_lying(
            f"it records a volume of {state.volume_gib} GiB; the image needs "
            f"{info.volume_gib} to {MAX_VOLUME_GIB} GiB"
        )
    check_importable(
        request,
        info,
        "pass --dont-verify-format if the upload was started with it, or --convert to upload "
        "a converted copy (a new upload)",
    )


def continue_recorded(
    record: UploadRecord,
    request: UploadRequest,
    settings: AwsSettings,
    *,
    progress: Progress,
    cancel: CancelToken | None,
    notify: Callable[[str], None],
    now: dt.datetime | None,
) -> UploadResult:
    """Send what the upload ``record`` (locked) describes still lacks, then its manifest."""
    from manifestkit.images import inspect_image

    state = record.recorded
    if state.stream is not None:
        from manifestkit.workflow.stream_upload import resume_streamed

        return resume_streamed(
            request, settings, record, progress=progress, cancel=cancel, notify=notify, now=now
        )
    if state.converted and not request.convert:
        # the parts sent are of the converted copy: the image itself is another size
        notify(
            f"the upload being resumed is of a converted copy of {request.image}; converting again"
        )
        request = dataclasses.replace(request, convert=True)
    owner = request.bucket_owner or state.expected_bucket_owner
    st = stat_regular(request.image)
    if not request.convert:
        _check_against_image(record, request, inspect_image(request.image, format=request.format))
        if st.st_mtime_ns != state.mtime_ns:
            notify(
                f"{request.image} was modified since the upload started; parts whose bytes "
                "changed are sent again"
            )
    conn = connect_for(settings, request, state.bucket, expected_owner=owner)
    plan = state.plan()
    target = Target(state.bucket, plan, state.file_format, state.volume_gib, owner)
    contexts = contextlib.ExitStack()
    with contexts:
        path, converted = request.image, False
        if request.convert:
            path, info, converted = contexts.enter_context(
                image_for_upload(request, progress, notify)
            )
            _check_against_image(record, request, info)
        result = _send_missing(
            conn, settings, target, path, request, progress=progress, cancel=cancel, now=now
        )
    record.complete()
    return dataclasses.replace(result, state_file=record.file, converted=converted)


def resume_upload(
    manifest_source: str,
    image: str,
    settings: AwsSettings,
    *,
    workers: int | None = None,
    part_retries: int = DEFAULT_PART_RETRIES,
    expires_in: int = MAX_EXPIRES,
    renew_margin: int = DEFAULT_RENEW_MARGIN,
    bucket_owner: str | None = None,
    ignore_region_affinity: bool = False,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    now: dt.datetime | None = None,
) -> UploadResult:
    """Finish the upload a manifest (file or URL) describes from the local ``image``.

    Keeps the parts already in the bucket whose size and ETag match the local bytes, sends the
    rest, and writes a new manifest (fresh URLs) when the old one's expire within ``renew_margin``.
    Refuses (``ImageError``, exit 2) when ``image`` is not the manifest's size.
    """
    progress = progress or NoProgress()
    size = stat_regular(image).st_size
    # the image's own record, if any, is locked too: no other upload of it runs meanwhile
    with UploadRecord.locked(image, None, ignore_unreadable=True) as record:
        result = _resume_described(
            manifest_source,
            image,
            size,
            settings,
            workers=workers,
            part_retries=part_retries,
            expires_in=expires_in,
            renew_margin=renew_margin,
            bucket_owner=bucket_owner,
            ignore_region_affinity=ignore_region_affinity,
            progress=progress,
            cancel=cancel,
            now=now,
        )
        # the image's own record of this upload (if it has one) is finished now too; left
        # unfinished, the next ``upload IMAGE`` would be refused as a replacement of an
        # interrupted upload
        state = record.state
        if state is not None and not state.complete:
            if record.is_of(result.bucket, result.upload_id):
                record.complete()
    return result


def _resume_described(
    manifest_source: str,
    image: str,
    size: int,
    settings: AwsSettings,
    *,
    workers: int | None,
    part_retries: int,
    expires_in: int,
    renew_margin: int,
    bucket_owner: str | None,
    ignore_region_affinity: bool,
    progress: Progress,
    cancel: CancelToken | None,
    now: dt.datetime | None,
) -> UploadResult:
    from manifestkit.images import inspect_image
    from manifestkit.s3.url_policy import UrlPolicy
    from manifestkit.workflow.manifest_source import plan_from_manifest

    session = make_session(settings)
    workers = workers or default_workers()
    s3 = upload_s3_client(session, settings, workers=workers)
    described = plan_from_manifest(
        manifest_source, s3_client=lambda: s3, policy=UrlPolicy.from_settings(settings)
    )
    if size != described.plan.file_bytes:
        raise ImageError(
            f"{image} is {size} bytes but the manifest describes {described.plan.file_bytes} bytes",
            fix="give the image the manifest was made for, or start a new upload",
        )
    # a manifest is untrusted too: it must not make a new manifest call a VMDK RAW
    info = inspect_image(image)
    if info.format != described.file_format:
        raise ImageError(
            f"{image} is a {info.format} image but the manifest describes a "
            f"{described.file_format} one",
            fix="give the image the manifest was made for, or start a new upload",
        )
    region = region_of(session)
    bucket_region = ensure_bucket(
        s3,
        described.bucket,
        ec2_region=region,
        create=False,
        ignore_region_affinity=ignore_region_affinity,
        expected_owner=bucket_owner,
    )
    conn = Connection(session, s3, region, bucket_region)
    target = Target(
        described.bucket, described.plan, described.file_format, described.volume_gib, bucket_owner
    )
    request = UploadRequest(
        image=image,
        bucket=described.bucket,
        workers=workers,
        part_retries=part_retries,
        expires_in=expires_in,
        renew_margin=renew_margin,
        bucket_owner=bucket_owner,
    )
    return _send_missing(
        conn, settings, target, image, request, progress=progress, cancel=cancel, now=now
    )


def _send_missing(
    conn: Connection,
    settings: AwsSettings,
    target: Target,
    path: str,
    request: UploadRequest,
    *,
    progress: Progress,
    cancel: CancelToken | None,
    now: dt.datetime | None,
) -> UploadResult:
    """The parts of ``target`` in the bucket whose size and ETag match ``path``'s bytes are kept,
    the rest sent; the manifest there is kept while it fits and its URLs live long enough."""
    existing = list_existing(
        conn.s3, target.bucket, target.plan, expected_owner=target.expected_owner
    )
    return send_parts_and_manifest(
        conn,
        settings,
        target,
        path,
        request,
        existing=existing,
        progress=progress,
        cancel=cancel,
        now=now,
        reuse_manifest=True,
    )
