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
from manifestkit.errors import ImageError
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
    connect,
    image_for_upload,
    send_parts_and_manifest,
    upload_s3_client,
)
from manifestkit.workflow.upload_record import UploadRecord

__all__ = ["resume_from_record", "resume_upload"]


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
    record = UploadRecord.for_resume(request.image, request.state_dir)
    record.check_resumable(
        bucket=request.bucket, prefix=request.prefix, part_size=request.part_size
    )
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
    if st.st_size != state.file_bytes and not request.convert:
        raise ImageError(
            f"{request.image} is {st.st_size} bytes but the upload being resumed is of "
            f"{state.file_bytes} bytes: the image changed",
            fix="start a new upload without --resume",
        )
    if st.st_mtime_ns != state.mtime_ns and not request.convert:
        notify(
            f"{request.image} was modified since the upload started; parts whose bytes "
            "changed are sent again"
        )
    conn = connect(
        settings,
        state.bucket,
        workers=request.workers or default_workers(),
        ignore_region_affinity=request.ignore_region_affinity,
        expected_owner=owner,
    )
    plan = state.plan()
    target = Target(state.bucket, plan, state.file_format, state.volume_gib, owner)
    contexts = contextlib.ExitStack()
    with contexts:
        path, converted = request.image, False
        if request.convert:
            path, info, converted = contexts.enter_context(
                image_for_upload(request, progress, notify)
            )
            if info.file_bytes != state.file_bytes:
                raise ImageError(
                    f"the converted copy of {request.image} is {info.file_bytes} bytes, the upload "
                    f"being resumed is of {state.file_bytes}",
                    fix="start a new upload without --resume",
                )
        existing = list_existing(conn.s3, state.bucket, plan, expected_owner=owner)
        result = send_parts_and_manifest(
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
    from manifestkit.s3.url_policy import UrlPolicy
    from manifestkit.workflow.manifest_source import plan_from_manifest

    progress = progress or NoProgress()
    size = stat_regular(image).st_size
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
    existing = list_existing(s3, described.bucket, described.plan, expected_owner=bucket_owner)
    result = send_parts_and_manifest(
        conn,
        settings,
        target,
        image,
        request,
        existing=existing,
        progress=progress,
        cancel=cancel,
        now=now,
        reuse_manifest=True,
    )
    # the image's own record of this upload (if it has one) is finished now too; left
    # unfinished, the next ``upload IMAGE`` would be refused as a replacement of an interrupted
    # upload
    record = UploadRecord.find(image, None)
    if record is not None and not record.recorded.complete:
        if record.is_of(described.bucket, described.plan.upload_id):
            record.complete()
    return result
