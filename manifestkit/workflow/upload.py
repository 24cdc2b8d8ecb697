"""The upload steps: image -> checked bucket -> parts -> verification -> manifest -> its URL.

Re-exported by ``manifestkit.workflow``, the composition library users and the CLI call.

An upload runs in the one order that never lets the importer see a half-written state
(design.md §4): check the bucket, record the upload locally (``UploadRecord``), all parts, a
verification pass (HEAD every part), then the manifest object, then hand back the manifest's
presigned GET URL. The URL is a bearer token: it is returned, never logged above debug level.

This module holds a new upload (``upload_image``, ``put_manifest_only``) and the steps every
upload shares (``connect``, ``send_parts_and_manifest``); ``workflow.resume`` continues one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.config import Config

from manifestkit.aws import AwsSettings, client_config, make_session, region_of
from manifestkit.errors import ManifestError, ManifestkitError, NotImportableError, UsageError
from manifestkit.images.info import ImageInfo
from manifestkit.images.reader import stat_regular
from manifestkit.parts import DEFAULT_PART_SIZE, PartPlan
from manifestkit.progress import NoProgress, Progress
from manifestkit.s3.bucket_checks import ensure_bucket
from manifestkit.s3.part_upload import (
    DEFAULT_PART_RETRIES,
    ExistingParts,
    PartUploader,
    UploadStats,
    default_workers,
    put_manifest_file,
    verify_uploaded,
)
from manifestkit.s3.pool import CancelToken
from manifestkit.s3.presign import MAX_EXPIRES  # SigV4's ceiling: the default URL lifetime
from manifestkit.workflow.upload_record import UploadRecord

if TYPE_CHECKING:
    from manifestkit.s3.presign import Presigner

log = logging.getLogger("manifestkit")

#: a manifest up to this size is built in memory (about 1.3 KB per part: ~12,000 parts)
MANIFEST_IN_MEMORY = 16 << 20

#: the image argument that reads a RAW disk from standard input (``workflow.stream_upload``)
STDIN = "-"

#: on resume, a manifest whose URLs expire sooner than this is issued again with fresh URLs
DEFAULT_RENEW_MARGIN = 86400


__all__ = [
    "DEFAULT_RENEW_MARGIN",
    "MAX_EXPIRES",
    "UploadRequest",
    "UploadResult",
    "put_manifest_only",
    "upload_image",
    "upload_s3_client",
]


@dataclass(frozen=True)
class UploadRequest:
    """One upload of a local image: where it goes, how it is cut, and what is checked."""

    image: str
    bucket: str | None = None
    prefix: str = ""
    #: None: ``DEFAULT_PART_SIZE`` for a new upload, the recorded one on resume
    part_size: int | None = None
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
    #: read a whole disk (block device) even while it is mounted read-write
    force: bool = False
    dont_verify_format: bool = False
    #: the user's claim about the format (``VMDK``|``VHD``|``RAW``), checked against the content
    format: str | None = None
    dedupe_zeros: bool = True
    renew_margin: int = DEFAULT_RENEW_MARGIN
    #: upload a second copy even when the record says this image is uploaded already
    new_upload: bool = False


@dataclass(frozen=True)
class UploadResult:
    """What an upload left in S3; ``to_dict`` is the ``--output json`` document."""

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
    #: True: the image's recorded upload was complete already; nothing new was uploaded
    already_uploaded: bool = False
    #: where the record of an earlier upload of the image was moved (a second copy, or the
    #: image changed since), None when there was none to keep
    previous_state_file: str | None = None

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
            "already_uploaded": self.already_uploaded,
            "previous_state_file": self.previous_state_file,
            **self.stats.to_dict(),
        }


@dataclass(frozen=True)
class Target:
    """What an upload writes: the same for a new upload, a resumed one and a resumed manifest."""

    bucket: str
    plan: PartPlan
    file_format: str
    volume_gib: int
    expected_owner: str | None


@dataclass(frozen=True)
class Connection:
    """The session, the upload's S3 client and the regions, once the bucket is checked."""

    session: Any
    s3: Any
    #: the EC2 region (the session's)
    region: str
    #: the bucket's region: URLs are signed for it (differs only with --ignore-region-affinity)
    bucket_region: str


#: retries botocore makes of one upload request (3 tries), on top of ``part_retries`` attempts
UPLOAD_REQUEST_RETRIES = 2
#: seconds to wait for a TCP connection to S3 (botocore's default is 60)
UPLOAD_CONNECT_TIMEOUT = 10


def upload_s3_client(session: Any, settings: AwsSettings, *, workers: int) -> Any:
    """An S3 client for uploads: a connection per worker, bounded retries, one checksum per body.

    Retries: the part uploader retries each whole part (``part_retries``, 3 by default, backing
    off 1 s then 2 s) on top of botocore's retries of each request. With the settings' default of
    8 botocore retries (standard mode: exponential back-off up to 20 s) a server that keeps
    failing made every part wait about 3 x 90 s before the command gave up. Here botocore retries
    each request at most ``UPLOAD_REQUEST_RETRIES`` times (fewer if the settings ask for fewer):
    at most 3 x 3 = 9 tries per part, about 12 s of back-off in all, so a failing server ends
    the command in seconds with ``--resume`` to try again, while a brief 503/SlowDown or reset
    connection is still absorbed. A connection attempt gives up after
    ``UPLOAD_CONNECT_TIMEOUT`` seconds; the read timeout stays botocore's 60 s, since a large
    CopyObject may legitimately take a while to answer.

    Checksums: botocore >= 1.36 adds a CRC32 of every body by default (``when_supported``), and
    over plain HTTP it also SHA-256-signs every body. Each part already carries Content-MD5,
    which S3 checks and which we compare with the ETag, so those would be two more passes over
    every byte. Over HTTPS with Content-MD5 botocore already leaves the payload unsigned; this
    makes custom plain-HTTP endpoints (the sandbox, on-premises S3) behave the same.
    """
    config = client_config(
        settings, max_pool_connections=workers + 2, payload_signing_enabled=False
    ).merge(
        Config(
            request_checksum_calculation="when_required",
            retries={
                "mode": settings.retry_mode,
                "max_attempts": min(settings.max_attempts, UPLOAD_REQUEST_RETRIES),
            },
            connect_timeout=UPLOAD_CONNECT_TIMEOUT,
        )
    )
    return session.client(
        "s3", region_name=region_of(session), endpoint_url=settings.s3_endpoint_url, config=config
    )


def connect(
    settings: AwsSettings,
    bucket: str,
    *,
    workers: int,
    create: bool = False,
    ignore_region_affinity: bool = False,
    expected_owner: str | None = None,
) -> Connection:
    """A session and upload client, and the bucket checked (exists, owner, region affinity)."""
    session = make_session(settings)
    region = region_of(session)
    s3 = upload_s3_client(session, settings, workers=workers)
    bucket_region = ensure_bucket(
        s3,
        bucket,
        ec2_region=region,
        create=create,
        ignore_region_affinity=ignore_region_affinity,
        expected_owner=expected_owner,
    )
    return Connection(session, s3, region, bucket_region)


def connect_for(
    settings: AwsSettings,
    request: UploadRequest,
    bucket: str,
    *,
    expected_owner: str | None,
    create: bool = False,
    workers: int | None = None,
) -> Connection:
    """``connect`` with ``request``'s workers and region-affinity choice."""
    return connect(
        settings,
        bucket,
        workers=workers or request.workers or default_workers(),
        create=create,
        ignore_region_affinity=request.ignore_region_affinity,
        expected_owner=expected_owner,
    )


def check_importable(request: UploadRequest, info: ImageInfo, fix: str) -> None:
    """Refuse an image EC2 cannot import, unless ``--dont-verify-format`` (then warn)."""
    if info.importable:
        return
    if not request.dont_verify_format:
        raise NotImportableError(
            f"{request.image}: EC2 cannot import this image: {' '.join(info.problems)}", fix=fix
        )
    log.warning(
        "%s: uploading anyway (--dont-verify-format): %s", request.image, " ".join(info.problems)
    )


@contextlib.contextmanager
def image_for_upload(
    request: UploadRequest, progress: Progress, notify: Callable[[str], None]
) -> Iterator[tuple[str, ImageInfo, bool]]:
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
    fix = "pass --convert to upload a converted copy, or convert it yourself"
    if info.details.get("format_given") not in (None, info.format):
        # a wrong --format is not fixed by converting: the problem line says what to pass
        fix = ""
    check_importable(request, info, fix)
    yield request.image, info, False


def _importable_as_it_is(image: str) -> bool:
    """Whether EC2 takes ``image`` as it is (``--convert`` then uploads it unchanged)."""
    from manifestkit.images import inspect_image

    try:
        return inspect_image(image).importable
    except ManifestkitError:
        # refused as an import (a qcow2, a damaged header): the converter says whether it can
        # read the data, with its own error
        return False


def _volume_gib(requested: int | None, info: ImageInfo) -> int:
    """``requested`` (never below the image's capacity: UsageError), or the image's own."""
    from manifestkit.manifest.build import MAX_VOLUME_GIB

    if requested is None:
        return int(info.volume_gib)
    if requested > MAX_VOLUME_GIB:
        # said before any part is sent: the manifest, written after them all, refuses it
        raise UsageError(
            f"--volume-size {requested} GiB is above the EBS maximum of {MAX_VOLUME_GIB} GiB",
            fix=f"give at most {MAX_VOLUME_GIB}",
        )
    if requested < info.volume_gib:
        raise UsageError(
            f"--volume-size {requested} GiB is smaller than the image's {info.volume_gib} GiB",
            fix=f"give at least {info.volume_gib}",
        )
    return requested


def _new_target(request: UploadRequest, path: str, info: ImageInfo) -> Target:
    """What a new upload of ``path`` (``request.image`` or its converted copy) writes."""
    plan = PartPlan.for_file(
        path,
        info.file_bytes,
        part_size=DEFAULT_PART_SIZE if request.part_size is None else request.part_size,
        prefix=request.prefix,
    )
    assert request.bucket is not None  # _require_bucket
    return Target(
        request.bucket,
        plan,
        info.format,
        _volume_gib(request.volume_gib, info),
        request.bucket_owner,
    )


def _start_record(
    record: UploadRecord,
    path: str,
    target: Target,
    conn: Connection,
    settings: AwsSettings,
    *,
    converted: bool = False,
) -> None:
    record.start(
        path,
        target.plan,
        bucket=target.bucket,
        region=conn.region,
        file_format=target.file_format,
        volume_gib=target.volume_gib,
        s3_endpoint_url=settings.s3_endpoint_url,
        expected_bucket_owner=target.expected_owner,
        converted=converted,
    )
    log.debug("upload state in %s", record.file)


def _require_bucket(request: UploadRequest) -> str:
    from manifestkit.s3.bucket_names import validate_bucket_name

    if not request.bucket:
        raise UsageError("no bucket given", fix="pass --bucket")
    validate_bucket_name(request.bucket)
    return request.bucket


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
    if request.image == STDIN:
        from manifestkit.workflow.stream_upload import upload_stdin

        return upload_stdin(
            request, settings, progress=progress, cancel=cancel, notify=notify, now=now
        )
    # a missing or unreadable image is bad input (exit 2), found before any network call
    whole_disk = stat.S_ISBLK(stat_regular(request.image, allow_block=True).st_mode)
    if request.resume:
        from manifestkit.workflow.resume import resume_from_record

        return resume_from_record(
            request, settings, progress=progress, cancel=cancel, notify=notify, now=now
        )
    if whole_disk and not request.convert:
        raise UsageError(
            f"{request.image}: is a whole disk (a block device); it is uploaded converted",
            fix="pass --convert (it converts while uploading, with no local copy)",
        )
    if request.convert and (whole_disk or not _importable_as_it_is(request.image)):
        from manifestkit.workflow.stream_upload import upload_streamed

        return upload_streamed(
            request, settings, progress=progress, cancel=cancel, notify=notify, now=now
        )
    bucket = _require_bucket(request)
    with UploadRecord.for_new_upload(
        request.image,
        request.state_dir,
        enabled=request.record_state,
        new_upload=request.new_upload,
    ) as record:
        from manifestkit.workflow.resume import reuse_recorded_upload

        done = reuse_recorded_upload(
            record, request, settings, progress=progress, cancel=cancel, notify=notify, now=now
        )
        if done is not None:
            return done
        conn = connect_for(
            settings,
            request,
            bucket,
            expected_owner=request.bucket_owner,
            create=request.create_bucket,
        )
        with image_for_upload(request, progress, notify) as (path, info, converted):
            target = _new_target(request, path, info)
            _start_record(record, path, target, conn, settings, converted=converted)
            result = send_parts_and_manifest(
                conn,
                settings,
                target,
                path,
                request,
                existing=None,
                progress=progress,
                cancel=cancel,
                now=now,
                reuse_manifest=False,
            )
            record.complete()
        return dataclasses.replace(
            result,
            state_file=record.file,
            converted=converted,
            previous_state_file=record.previous_file,
        )


def put_manifest_only(
    request: UploadRequest, settings: AwsSettings, *, now: dt.datetime | None = None
) -> UploadResult:
    """Plan the parts, record the upload locally and put only the manifest; send no part.

    For ``import-instance --no-upload``: the importer waits for every part's URL to answer, so
    the task can exist before the parts. ``manifestkit resume URL IMAGE`` (or ``manifestkit
    upload IMAGE --resume``) sends them later and keeps the manifest, and so the task's URL,
    while its URLs are fresh. ``request.convert`` is not honoured (there would be no copy left to
    send later); a non-importable image is refused unless ``dont_verify_format``.
    """
    from manifestkit.images import inspect_image

    bucket = _require_bucket(request)
    info = inspect_image(request.image, format=request.format)
    check_importable(request, info, "convert it first (manifestkit convert), then import the copy")
    conn = connect_for(
        settings,
        request,
        bucket,
        expected_owner=request.bucket_owner,
        create=request.create_bucket,
        workers=1,
    )
    target = _new_target(request, request.image, info)
    # an earlier record of the image is moved aside, not overwritten: still findable
    with UploadRecord.for_new_upload(
        request.image, request.state_dir, enabled=request.record_state, replace=True
    ) as record:
        _start_record(record, request.image, target, conn, settings)
        presigner = _presigner(conn, settings, request.expires_in, now)
        _write_and_put_manifest(conn.s3, target, presigner)
    plan = target.plan
    nothing_sent = UploadStats(
        parts=plan.count, put=0, copied=0, kept=0, bytes_sent=0, file_bytes=plan.file_bytes
    )
    result = _result(conn, target, presigner, presigner.expires_at, nothing_sent, written=True)
    return dataclasses.replace(
        result, state_file=record.file, previous_state_file=record.previous_file
    )


def _presigner(
    conn: Connection, settings: AwsSettings, expires_in: int, now: dt.datetime | None
) -> Presigner:
    """A presigner for the bucket's own region (it differs only with --ignore-region-affinity)."""
    from manifestkit.s3.presign import Presigner

    sign_settings = dataclasses.replace(settings, region=conn.bucket_region)
    sign_session = (
        conn.session
        if conn.bucket_region == conn.session.region_name
        else make_session(sign_settings)
    )
    return Presigner.from_session(sign_session, sign_settings, expires_in=expires_in, now=now)


def send_parts_and_manifest(
    conn: Connection,
    settings: AwsSettings,
    target: Target,
    path: str,
    request: UploadRequest,
    *,
    existing: ExistingParts | None,
    progress: Progress,
    cancel: CancelToken | None,
    now: dt.datetime | None,
    reuse_manifest: bool,
) -> UploadResult:
    """Parts, verification pass, manifest, URL: the steps every upload shares."""
    workers = request.workers or default_workers()
    uploader = PartUploader(
        conn.s3,
        target.bucket,
        path,
        target.plan,
        workers=workers,
        part_retries=request.part_retries,
        expected_owner=target.expected_owner,
        dedupe_zeros=request.dedupe_zeros,
        existing=existing,
        progress=progress,
        cancel=cancel,
    )
    stats = uploader.run()
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
        reuse_manifest=reuse_manifest,
    )


def finish_upload(
    conn: Connection,
    settings: AwsSettings,
    target: Target,
    request: UploadRequest,
    stats: UploadStats,
    md5_hex: Callable[[int], str],
    *,
    existing: ExistingParts | Mapping[str, Any] | None,
    progress: Progress,
    cancel: CancelToken | None,
    now: dt.datetime | None,
    reuse_manifest: bool = True,
) -> UploadResult:
    """Once every part is sent (from a file or a stream): the verification pass, the manifest
    (kept when ``reuse_manifest`` and the one in the bucket still fits), its URL."""
    workers = request.workers or default_workers()
    plan = target.plan
    s3 = conn.s3
    # a listing page per 1,000 parts (a HEAD per part where listing is denied): its own bar
    verify_uploaded(
        s3,
        target.bucket,
        plan,
        md5_hex,
        workers=workers,
        expected_owner=target.expected_owner,
        progress=progress,
        cancel=cancel,
    )
    presigner = _presigner(conn, settings, request.expires_in, now)
    expires_at = None
    if reuse_manifest and existing is not None and plan.manifest_key in existing:
        expires_at = _reusable_manifest_expiry(s3, target, now=now, margin=request.renew_margin)
    written = expires_at is None
    if written:
        _write_and_put_manifest(s3, target, presigner)
        expires_at = presigner.expires_at
    return _result(conn, target, presigner, expires_at, stats, written=written)


def _result(
    conn: Connection,
    target: Target,
    presigner: Presigner,
    expires_at: dt.datetime,
    stats: UploadStats,
    *,
    written: bool,
) -> UploadResult:
    """The result of an upload whose manifest is in place: its URL (debug log only) and facts."""
    plan = target.plan
    url = presigner.url("GET", target.bucket, plan.manifest_key)
    log.debug("manifest URL: %s", url)
    return UploadResult(
        manifest_url=url,
        bucket=target.bucket,
        manifest_key=plan.manifest_key,
        upload_id=plan.upload_id,
        region=conn.bucket_region,
        file_format=target.file_format,
        file_bytes=plan.file_bytes,
        volume_gib=target.volume_gib,
        expires_at=expires_at.isoformat(),
        stats=stats,
        manifest_written=written,
        state_file=None,
        converted=False,
    )


def _write_and_put_manifest(s3: Any, target: Target, presigner: Presigner) -> None:
    from manifestkit.manifest import write_manifest

    # in memory up to MANIFEST_IN_MEMORY (no local file: a streamed upload writes nothing); a
    # larger manifest spills to an unlinked temporary file (mode 0600: its URLs are tokens)
    with tempfile.SpooledTemporaryFile(max_size=MANIFEST_IN_MEMORY, suffix=".xml") as out:
        write_manifest(
            out,
            plan=target.plan,
            file_format=target.file_format,
            bucket=target.bucket,
            presigner=presigner,
            volume_gib=target.volume_gib,
        )
        put_manifest_file(
            s3, target.bucket, target.plan.manifest_key, out, expected_owner=target.expected_owner
        )


def _reusable_manifest_expiry(
    s3: Any, target: Target, *, now: dt.datetime | None, margin: int
) -> dt.datetime | None:
    """When the manifest in the bucket still fits the upload and its URLs live longer than
    ``margin`` seconds: their expiry; None means write a new one."""
    from manifestkit.workflow.manifest_source import describe_manifest_object

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
        # a manifest's one part is the whole image, whatever part size cut it: only the
        # size of parts that are not the last one can be read back from it
        or (target.plan.count > 1 and described.plan.part_size != target.plan.part_size)
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
