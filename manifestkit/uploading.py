"""End-to-end steps composed from the modules; what the CLI and library users call.

Upload (``upload_image``, ``resume_upload``) runs in the one order that never lets the importer
see a half-written state (design.md §4): check the bucket, record the upload locally, all parts, a
verification pass (HEAD every part), then the manifest object, then hand back the manifest's
presigned GET URL. The URL is a bearer token: it is returned, never logged above debug level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.config import Config

from manifestkit.aws import AwsSettings, client_config, make_session, region_of
from manifestkit.bucket_checks import ensure_bucket
from manifestkit.errors import ImageError, ManifestError, NotImportableError, UsageError
from manifestkit.parts import DEFAULT_PART_SIZE, PartPlan
from manifestkit.pool import CancelToken
from manifestkit.progress import NoProgress, Progress
from manifestkit.upload import (
    DEFAULT_PART_RETRIES,
    PartUploader,
    UploadStats,
    default_workers,
    list_existing,
    put_manifest_file,
    verify_uploaded,
)
from manifestkit.upload_state import (
    find_state,
    new_state,
    state_path_for,
    write_state,
)

log = logging.getLogger("manifestkit")

#: SigV4's ceiling for presigned URLs, the default lifetime of every URL in a manifest
MAX_EXPIRES = 604800
#: on resume, a manifest whose URLs expire sooner than this is issued again with fresh URLs
DEFAULT_RENEW_MARGIN = 86400


@dataclass(frozen=True)
class UploadRequest:
    image: str
    bucket: str | None = None
    prefix: str = ""
    part_size: int = DEFAULT_PART_SIZE
    expires_in: int = MAX_EXPIRES
    #: None: the image's own volume size
    volume_gib: int | None = None
    workers: int | None = None
    part_retries: int = DEFAULT_PART_RETRIES
    create_bucket: bool = False
    ignore_region_affinity: bool = False
    bucket_owner: str | None = None
    #: continue the upload recorded in the state file instead of starting a new one
    resume: bool = False
    state_dir: str | None = None
    #: False: no state file (an upload that cannot be resumed anyway, e.g. to ``--local``)
    record_state: bool = True
    convert: bool = False
    dont_verify_format: bool = False
    #: the user's claim about the format (``VMDK``|``VHD``|``RAW``), checked against the content
    format: str | None = None
    dedupe_zeros: bool = True
    renew_margin: int = DEFAULT_RENEW_MARGIN


@dataclass(frozen=True)
class UploadResult:
    #: the presigned GET URL of the manifest: a bearer token
    manifest_url: str
    bucket: str
    manifest_key: str
    upload_id: str
    region: str
    file_format: str
    file_bytes: int
    volume_gib: int
    #: when the URLs inside the manifest expire (ISO 8601, UTC)
    expires_at: str
    stats: UploadStats
    #: on resume: True when a new manifest with fresh URLs was written
    manifest_written: bool
    state_file: str | None
    converted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest_url": self.manifest_url,
            "bucket": self.bucket,
            "manifest_key": self.manifest_key,
            "upload_id": self.upload_id,
            "region": self.region,
            "file_format": self.file_format,
            "file_bytes": self.file_bytes,
            "volume_gib": self.volume_gib,
            "expires_at": self.expires_at,
            "manifest_written": self.manifest_written,
            "state_file": self.state_file,
            "converted": self.converted,
            **self.stats.to_dict(),
        }


@dataclass(frozen=True)
class _Target:
    """What an upload writes: the same for a new upload, a resumed one and a resumed manifest."""

    bucket: str
    plan: PartPlan
    file_format: str
    volume_gib: int
    expected_owner: str | None


def upload_s3_client(session: Any, settings: AwsSettings, *, workers: int) -> Any:
    """An S3 client with a connection per worker and one checksum per body: Content-MD5.

    botocore >= 1.36 adds a CRC32 of every body by default (``when_supported``), and over plain
    HTTP it also SHA-256-signs every body. Each part already carries Content-MD5, which S3 checks
    and which we compare with the ETag, so those would be two more passes over every byte.
    Over HTTPS with Content-MD5 botocore already leaves the payload unsigned; this makes custom
    plain-HTTP endpoints (the sandbox, on-premises S3) behave the same.
    """
    config = client_config(
        settings, max_pool_connections=workers + 2, payload_signing_enabled=False
    ).merge(Config(request_checksum_calculation="when_required"))
    return session.client(
        "s3", region_name=region_of(session), endpoint_url=settings.s3_endpoint_url, config=config
    )


@contextlib.contextmanager
def _image_for_upload(
    request: UploadRequest, progress: Progress, notify: Callable[[str], None]
) -> Iterator[tuple[str, Any, bool]]:
    """(path to upload, its ImageInfo, converted?) — a converted temp copy lives for the block."""
    from manifestkit.images import inspect_image

    if request.convert:
        from manifestkit.convert import importable_copy

        # importable_copy decides: the image itself when EC2 takes it, else a streamOptimized
        # copy in a temporary folder that is removed when this block ends
        with importable_copy(request.image, progress=progress) as (path, converted):
            if converted:
                notify(
                    f"{request.image} is not importable as it is; uploading a converted "
                    "streamOptimized VMDK copy (removed afterwards)"
                )
            yield path, inspect_image(path), converted
        return
    info = inspect_image(request.image, format=request.format)
    if not info.importable:
        if not request.dont_verify_format:
            raise NotImportableError(
                f"{request.image}: EC2 cannot import this image: {' '.join(info.problems)}",
                fix="pass --convert to upload a converted copy, or convert it yourself",
            )
        log.warning(
            "%s: uploading anyway (--dont-verify-format): %s",
            request.image,
            " ".join(info.problems),
        )
    yield request.image, info, False


def _check_volume(requested: int | None, info: Any) -> int:
    if requested is None:
        return int(info.volume_gib)
    if requested < info.volume_gib:
        raise UsageError(
            f"--volume-size {requested} GiB is smaller than the image's {info.volume_gib} GiB",
            fix=f"give at least {info.volume_gib}",
        )
    return requested


def upload_image(
    request: UploadRequest,
    settings: AwsSettings,
    *,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    notify: Callable[[str], None] | None = None,
    now: dt.datetime | None = None,
) -> UploadResult:
    """Upload ``request.image`` and its manifest; ``request.resume`` continues the recorded one."""
    progress = progress or NoProgress()
    notify = notify or log.info
    from manifestkit.buckets import validate_bucket_name

    if request.resume:
        return _resume_from_state(
            request, settings, progress=progress, cancel=cancel, notify=notify, now=now
        )
    if not request.bucket:
        raise UsageError("no bucket given", fix="pass --bucket")
    validate_bucket_name(request.bucket)
    session = make_session(settings)
    region = region_of(session)
    workers = request.workers or default_workers()
    s3 = upload_s3_client(session, settings, workers=workers)
    bucket_region = ensure_bucket(
        s3,
        request.bucket,
        ec2_region=region,
        create=request.create_bucket,
        ignore_region_affinity=request.ignore_region_affinity,
        expected_owner=request.bucket_owner,
    )
    with _image_for_upload(request, progress, notify) as (path, info, converted):
        plan = PartPlan.for_file(
            path, info.file_bytes, part_size=request.part_size, prefix=request.prefix
        )
        target = _Target(
            request.bucket,
            plan,
            info.format,
            _check_volume(request.volume_gib, info),
            request.bucket_owner,
        )
        state = new_state(
            request.image if not converted else path,
            plan,
            bucket=request.bucket,
            region=region,
            file_format=info.format,
            volume_gib=target.volume_gib,
            s3_endpoint_url=settings.s3_endpoint_url,
            expected_bucket_owner=request.bucket_owner,
        )
        state = dataclasses.replace(state, image=os.path.abspath(request.image))
        state_file = state_path_for(request.image, request.state_dir)
        if request.record_state:
            write_state(state_file, state)
            log.debug("upload state in %s", state_file)
        result = _run(
            session,
            settings,
            s3,
            target,
            path,
            request,
            bucket_region=bucket_region,
            existing=None,
            progress=progress,
            cancel=cancel,
            now=now,
            reuse_manifest=False,
        )
        if request.record_state:
            write_state(state_file, dataclasses.replace(state, complete=True))
    return dataclasses.replace(
        result, state_file=str(state_file) if request.record_state else None, converted=converted
    )


def _resume_from_state(
    request: UploadRequest,
    settings: AwsSettings,
    *,
    progress: Progress,
    cancel: CancelToken | None,
    notify: Callable[[str], None],
    now: dt.datetime | None,
) -> UploadResult:
    found = find_state(request.image, request.state_dir)
    if found is None:
        raise UsageError(
            f"no upload of {request.image} to resume (no state file found)",
            fix="start it without --resume, or run: manifestkit resume MANIFEST_URL IMAGE",
        )
    state_file, state = found
    if request.bucket and request.bucket != state.bucket:
        raise UsageError(
            f"the upload of {request.image} being resumed went to bucket {state.bucket!r}, "
            f"not {request.bucket!r}",
            fix=f"pass --bucket {state.bucket} or leave --bucket out",
        )
    owner = request.bucket_owner or state.expected_bucket_owner
    st = os.stat(request.image)
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
    session = make_session(settings)
    region = region_of(session)
    workers = request.workers or default_workers()
    s3 = upload_s3_client(session, settings, workers=workers)
    bucket_region = ensure_bucket(
        s3,
        state.bucket,
        ec2_region=region,
        create=False,
        ignore_region_affinity=request.ignore_region_affinity,
        expected_owner=owner,
    )
    plan = state.plan()
    target = _Target(state.bucket, plan, state.file_format, state.volume_gib, owner)
    contexts = contextlib.ExitStack()
    with contexts:
        path, converted = request.image, False
        if request.convert:
            path, info, converted = contexts.enter_context(
                _image_for_upload(request, progress, notify)
            )
            if info.file_bytes != state.file_bytes:
                raise ImageError(
                    f"the converted copy of {request.image} is {info.file_bytes} bytes, the upload "
                    f"being resumed is of {state.file_bytes}",
                    fix="start a new upload without --resume",
                )
        existing = list_existing(s3, state.bucket, plan.key_prefix, expected_owner=owner)
        result = _run(
            session,
            settings,
            s3,
            target,
            path,
            request,
            bucket_region=bucket_region,
            existing=existing,
            progress=progress,
            cancel=cancel,
            now=now,
            reuse_manifest=True,
        )
    write_state(state_file, dataclasses.replace(state, complete=True))
    return dataclasses.replace(result, state_file=str(state_file), converted=converted)


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
    from manifestkit.manifest_source import plan_from_manifest

    progress = progress or NoProgress()
    session = make_session(settings)
    workers = workers or default_workers()
    s3 = upload_s3_client(session, settings, workers=workers)
    described = plan_from_manifest(manifest_source, s3_client=lambda: s3)
    size = os.stat(image).st_size
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
    target = _Target(
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
    existing = list_existing(
        s3, described.bucket, described.plan.key_prefix, expected_owner=bucket_owner
    )
    return _run(
        session,
        settings,
        s3,
        target,
        image,
        request,
        bucket_region=bucket_region,
        existing=existing,
        progress=progress,
        cancel=cancel,
        now=now,
        reuse_manifest=True,
    )


def _run(
    session: Any,
    settings: AwsSettings,
    s3: Any,
    target: _Target,
    path: str,
    request: UploadRequest,
    *,
    bucket_region: str,
    existing: dict[str, Any] | None,
    progress: Progress,
    cancel: CancelToken | None,
    now: dt.datetime | None,
    reuse_manifest: bool,
) -> UploadResult:
    """Parts, verification pass, manifest, URL: the steps every upload shares."""
    from manifestkit.presign import Presigner

    workers = request.workers or default_workers()
    plan = target.plan
    uploader = PartUploader(
        s3,
        target.bucket,
        path,
        plan,
        workers=workers,
        part_retries=request.part_retries,
        expected_owner=target.expected_owner,
        dedupe_zeros=request.dedupe_zeros,
        existing=existing,
        progress=progress,
        cancel=cancel,
    )
    stats = uploader.run()
    verify_uploaded(
        s3,
        target.bucket,
        plan,
        uploader.md5_hex,
        workers=workers,
        expected_owner=target.expected_owner,
        cancel=cancel,
    )

    # URLs are signed for the bucket's own region (they differ only with --ignore-region-affinity).
    sign_settings = dataclasses.replace(settings, region=bucket_region)
    sign_session = session if bucket_region == session.region_name else make_session(sign_settings)
    presigner = Presigner.from_session(
        sign_session, sign_settings, expires_in=request.expires_in, now=now
    )
    expires_at = None
    if reuse_manifest and existing is not None and plan.manifest_key in existing:
        expires_at = _reusable_manifest_expiry(s3, target, now=now, margin=request.renew_margin)
    written = expires_at is None
    if written:
        _write_and_put_manifest(s3, target, presigner)
        expires_at = presigner.expires_at
    url = presigner.url("GET", target.bucket, plan.manifest_key)
    log.debug("manifest URL: %s", url)
    return UploadResult(
        manifest_url=url,
        bucket=target.bucket,
        manifest_key=plan.manifest_key,
        upload_id=plan.upload_id,
        region=bucket_region,
        file_format=target.file_format,
        file_bytes=plan.file_bytes,
        volume_gib=target.volume_gib,
        expires_at=expires_at.isoformat(),
        stats=stats,
        manifest_written=written,
        state_file=None,
        converted=False,
    )


def _write_and_put_manifest(s3: Any, target: _Target, presigner: Any) -> None:
    from manifestkit.manifest import write_manifest

    fd, tmp = tempfile.mkstemp(prefix="manifestkit-", suffix=".xml")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            write_manifest(
                out,
                plan=target.plan,
                file_format=target.file_format,
                bucket=target.bucket,
                presigner=presigner,
                volume_gib=target.volume_gib,
            )
        put_manifest_file(
            s3, target.bucket, target.plan.manifest_key, tmp, expected_owner=target.expected_owner
        )
    finally:
        os.unlink(tmp)


def _reusable_manifest_expiry(
    s3: Any, target: _Target, *, now: dt.datetime | None, margin: int
) -> dt.datetime | None:
    """When the manifest in the bucket still fits the upload and its URLs live longer than
    ``margin`` seconds: their expiry; None means write a new one."""
    from manifestkit.manifest_source import describe_manifest_object

    try:
        described = describe_manifest_object(
            s3, target.bucket, target.plan.manifest_key, expected_owner=target.expected_owner
        )
    except ManifestError as exc:
        log.info("the manifest in the bucket is not usable (%s); writing a new one", exc)
        return None
    current = (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
    if (
        described.plan.file_bytes != target.plan.file_bytes
        or described.plan.count != target.plan.count
        or described.plan.part_size != target.plan.part_size
        or described.volume_gib != target.volume_gib
    ):
        log.info("the manifest in the bucket describes another upload; writing a new one")
        return None
    if described.expires_at - current < dt.timedelta(seconds=margin):
        log.info(
            "the manifest's URLs expire at %s; writing a new one with fresh URLs",
            described.expires_at.isoformat(),
        )
        return None
    return described.expires_at


# The import steps (upload -> ImportInstance / ImportVolume -> wait) live in manifestkit.importing
# and are re-exported here, so the whole pipeline is one import away for library users. Imported
# last: importing reaches back into this module (upload_image) only inside its functions.
from manifestkit.ec2 import ConversionTask, LaunchSpec, WaitSettings  # noqa: E402
from manifestkit.importing import (  # noqa: E402
    ConversionTaskFailed,
    ImportInstanceRequest,
    ImportVolumeRequest,
    check_import_instance,
    check_import_volume,
    import_instance,
    import_volume,
)

__all__ = [
    "ConversionTask",
    "ConversionTaskFailed",
    "ImportInstanceRequest",
    "ImportVolumeRequest",
    "LaunchSpec",
    "UploadRequest",
    "UploadResult",
    "WaitSettings",
    "check_import_instance",
    "check_import_volume",
    "import_instance",
    "import_volume",
    "resume_upload",
    "upload_image",
]
