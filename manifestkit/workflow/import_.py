"""The one-command import: image -> upload -> ImportInstance/ImportVolume -> wait -> ConversionTask.

Re-exported by ``manifestkit.workflow`` (``from manifestkit.workflow import import_instance,
ImportInstanceRequest``). The upload steps are ``manifestkit.workflow.upload``'s public functions.

Nothing is left half-done without saying so. Before uploading, EC2's DryRun of the call catches
refused credentials and requests EC2 rejects. When the real call still fails after the upload, the
error names the manifest (``s3://bucket/key``) and the two ways out (retry with ``--manifest-url``,
or ``delete``); the URL itself, a bearer token, rides on the error as ``manifest_url``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from manifestkit import ec2
from manifestkit.aws import AwsSettings, ec2_client, make_session
from manifestkit.ec2 import (
    DOCUMENTED_PLATFORM,
    ConversionTask,
    DiskImageSpec,
    InstanceImportSpec,
    LaunchSpec,
    VolumeImportSpec,
    WaitSettings,
)
from manifestkit.errors import (
    CredentialsError,
    ManifestkitError,
    NotImportableError,
    TaskFailed,
    UsageError,
)
from manifestkit.images.info import FORMATS, volume_gib_for
from manifestkit.parts import DEFAULT_PART_SIZE
from manifestkit.progress import NoProgress, Progress
from manifestkit.workflow.upload import UploadRequest, UploadResult, put_manifest_only, upload_image

log = logging.getLogger("manifestkit")

#: InstanceImportSpec or VolumeImportSpec
Spec = TypeVar("Spec", InstanceImportSpec, VolumeImportSpec)

__all__ = [
    "ConversionTaskFailed",
    "ImportInstanceRequest",
    "ImportVolumeRequest",
    "LaunchSpec",
    "WaitSettings",
    "check_import_instance",
    "check_import_volume",
    "import_instance",
    "import_volume",
]


class ConversionTaskFailed(TaskFailed):
    """A waited-for task ended ``cancelled``; ``task`` is EC2's last word on it (exit 1)."""

    def __init__(self, task: ConversionTask) -> None:
        super().__init__(
            f"conversion task {task.id} ended {task.state}: "
            f"{task.status_message or 'no status message'}"
        )
        self.task = task


@dataclass(frozen=True)
class ImportInstanceRequest:
    """One ImportInstance of a local image (``upload``) or of an uploaded manifest."""

    #: the image to upload (bucket, prefix, part size, --convert...); None with ``manifest_url``
    upload: UploadRequest | None = None
    #: an already uploaded manifest's presigned GET URL: no upload
    manifest_url: str | None = None
    #: ``Windows`` is the value EC2 documents; ``Linux`` works with EC2-compatible clouds
    platform: str = "Windows"
    launch: LaunchSpec = field(default_factory=LaunchSpec)
    description: str | None = None
    #: ``Volume.Size`` (GiB); default: the image's (or the manifest's) volume size
    volume_gib: int | None = None
    #: put the manifest in S3 and create the task, but leave the parts for ``manifestkit resume``
    no_upload: bool = False

    def __post_init__(self) -> None:
        _check_source(self.upload, self.manifest_url, self.no_upload)


@dataclass(frozen=True)
class ImportVolumeRequest:
    """One ImportVolume; ``availability_zone`` is required."""

    availability_zone: str
    upload: UploadRequest | None = None
    manifest_url: str | None = None
    description: str | None = None
    volume_gib: int | None = None
    no_upload: bool = False

    def __post_init__(self) -> None:
        if not self.availability_zone:
            raise UsageError("ImportVolume needs an availability zone", fix="pass -z ZONE")
        _check_source(self.upload, self.manifest_url, self.no_upload)


def _check_source(upload: UploadRequest | None, manifest_url: str | None, no_upload: bool) -> None:
    if (upload is None) == (manifest_url is None):
        raise UsageError(
            "give either an image to upload or the URL of an uploaded manifest, not both",
            fix="pass IMAGE, or --manifest-url URL",
        )
    if no_upload and upload is None:
        raise UsageError("--no-upload needs an image", fix="pass IMAGE")
    if no_upload and upload is not None and upload.convert:
        raise UsageError(
            "--no-upload cannot be combined with --convert (the converted copy would be gone)",
            fix="convert first with manifestkit convert, then import the copy",
        )


# --------------------------------------------------------------------------- the disk image


@dataclass(frozen=True)
class _Staged:
    """The disk image EC2 will read, and how it got there (for recovery hints)."""

    disk: DiskImageSpec
    #: the local image (None with --manifest-url)
    image: str | None
    #: True when this call uploaded anything (parts and/or manifest) that needs cleaning up
    uploaded: bool
    #: True when only the manifest is in S3 (--no-upload): the parts still have to be sent
    parts_pending: bool = False


def _disk_from_manifest_url(
    url: str, volume_gib: int | None, settings: AwsSettings
) -> DiskImageSpec:
    """Read the manifest through its URL, as the importer will: unreachable -> RemoteError (exit 1),
    expired -> UsageError, not a manifest -> ManifestError (exit 2)."""
    from manifestkit.manifest import iter_manifest
    from manifestkit.workflow.manifest_source import is_url, local_manifest

    if not is_url(url):
        raise UsageError(
            f"--manifest-url {url!r} is not an http(s) URL",
            fix="give the presigned GET URL that manifestkit upload printed",
        )
    from manifestkit.s3.url_policy import UrlPolicy

    with local_manifest(url, policy=UrlPolicy.from_settings(settings)) as path:
        header, parts = iter_manifest(path)
        parts.close()  # type: ignore[attr-defined]
    # the volume holds what EC2 is told the image is (Image.Bytes = size): never below that
    needed = volume_gib_for(0, header.size)
    if volume_gib is not None and volume_gib < needed:
        raise UsageError(
            f"--volume-size {volume_gib} GiB is smaller than the manifest's {header.size}-byte "
            "image",
            fix=f"give at least {needed}",
        )
    return DiskImageSpec(
        format=header.file_format.upper(),
        file_bytes=header.size,
        manifest_url=url,
        volume_gib=volume_gib or max(header.volume_size, needed),
    )


def _upload_request(upload: UploadRequest, volume_gib: int | None) -> UploadRequest:
    if volume_gib is not None and upload.volume_gib is None:
        return dataclasses.replace(upload, volume_gib=volume_gib)
    return upload


def _disk_of(result: UploadResult) -> DiskImageSpec:
    return DiskImageSpec(
        format=result.file_format,
        file_bytes=result.file_bytes,
        manifest_url=result.manifest_url,
        volume_gib=result.volume_gib,
    )


def _stage(
    upload: UploadRequest | None,
    manifest_url: str | None,
    volume_gib: int | None,
    no_upload: bool,
    settings: AwsSettings,
    progress: Progress,
    notify: Callable[[str], None],
) -> _Staged:
    if manifest_url is not None:
        return _Staged(
            _disk_from_manifest_url(manifest_url, volume_gib, settings), None, uploaded=False
        )
    assert upload is not None  # _check_source
    upload = _upload_request(upload, volume_gib)
    if no_upload:
        # the importer waits for every part's URL to answer: the task can exist before the parts
        disk = _disk_of(put_manifest_only(upload, settings))
        return _Staged(disk, upload.image, uploaded=True, parts_pending=True)
    result = upload_image(upload, settings, progress=progress, notify=notify)
    return _Staged(_disk_of(result), upload.image, uploaded=True)


def _dry_run_disk(
    upload: UploadRequest | None,
    manifest_url: str | None,
    volume_gib: int | None,
    settings: AwsSettings,
) -> DiskImageSpec:
    """The disk image a real run would send, without uploading anything.

    The manifest URL is signed for the key the upload would use (signing is local); EC2 checks
    the request's shape and the caller's permission, not the URL, on a DryRun.
    """
    if manifest_url is not None:
        return _disk_from_manifest_url(manifest_url, volume_gib, settings)
    assert upload is not None
    from manifestkit.images import inspect_image
    from manifestkit.parts import PartPlan
    from manifestkit.s3.presign import Presigner

    try:
        info = inspect_image(upload.image, format=upload.format)
        file_format, file_bytes, needed_gib = info.format, info.file_bytes, info.volume_gib
    except NotImportableError:
        if not upload.convert:
            raise
        # --convert will upload a streamOptimized copy; its size is not known before converting
        file_bytes = os.stat(upload.image).st_size
        file_format, needed_gib = "VMDK", volume_gib_for(file_bytes)
    plan = PartPlan.for_file(
        upload.image,
        file_bytes,
        part_size=DEFAULT_PART_SIZE if upload.part_size is None else upload.part_size,
        prefix=upload.prefix,
    )
    presigner = Presigner.from_session(
        make_session(settings), settings, expires_in=upload.expires_in
    )
    bucket = upload.bucket or "manifestkit-dry-run"
    volume = upload.volume_gib or volume_gib or needed_gib
    return DiskImageSpec(
        format=file_format if file_format in FORMATS else "VMDK",
        file_bytes=file_bytes,
        manifest_url=presigner.url("GET", bucket, plan.manifest_key),
        volume_gib=max(volume, needed_gib),
    )


def _preflight(
    action: str,
    dry_run: Callable[[Any, DiskImageSpec], bool],
    client: Any,
    upload: UploadRequest,
    volume_gib: int | None,
    settings: AwsSettings,
) -> None:
    """EC2's DryRun of the call before the upload: refused credentials, a missing permission or
    a request EC2 rejects (unknown instance type, zone, platform...) cost one API call instead
    of an upload left behind."""
    disk = _dry_run_disk(upload, None, volume_gib, settings)
    try:
        allowed = dry_run(client, disk)
    except ManifestkitError as exc:
        raise _amended(exc, "nothing was uploaded (EC2 answered a DryRun of the call)") from exc
    if not allowed:
        raise CredentialsError(
            f"{action}: these credentials are not allowed to call it (UnauthorizedOperation on "
            "a DryRun); nothing was uploaded",
            fix=f"grant ec2:{action} to this user or role, or use other credentials",
        )


# --------------------------------------------------------------------------- the calls


def _warn_platform(platform: str, notify: Callable[[str], None]) -> None:
    if platform != DOCUMENTED_PLATFORM:
        notify(
            f"platform {platform!r} is not {DOCUMENTED_PLATFORM}, the only value EC2 documents; "
            "sending it anyway (EC2-compatible clouds may accept it)"
        )


def _where(url: str) -> str:
    """The manifest's place without the signature (a bearer token): ``s3://bucket/key``."""
    from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url

    try:
        info = parse_presigned_url(url)
    except PresignedUrlError:
        return url.split("?", 1)[0]
    return f"s3://{info.bucket}/{info.key}" if info.bucket else url.split("?", 1)[0]


def recovery_hint(staged: _Staged, command: str) -> str:
    """What to run after a failed EC2 call, so the upload is neither lost nor left behind.

    It names the manifest by bucket and key; the URL itself (a bearer token) travels as the
    error's ``manifest_url`` attribute, which the CLI prints on stdout like ``upload`` does.
    """
    retry = f"manifestkit {command} --manifest-url URL ..."
    if staged.parts_pending and staged.image:
        retry += f" (and send the parts: manifestkit resume URL {shlex.quote(staged.image)})"
    return (
        f"the image is uploaded ({_where(staged.disk.manifest_url)}; URL = its manifest URL): "
        f"retry with {retry}, or clean up with manifestkit delete URL"
    )


def _amended(exc: ManifestkitError, more: str) -> ManifestkitError:
    """The same error leaf (same exit code, same attributes) with ``more`` added to its fix."""
    clone = type(exc).__new__(type(exc))
    ManifestkitError.__init__(clone, exc.message, fix=f"{exc.fix}; {more}" if exc.fix else more)
    clone.__dict__.update({k: v for k, v in exc.__dict__.items() if k not in ("message", "fix")})
    return clone


def _with_recovery(exc: ManifestkitError, staged: _Staged, command: str) -> ManifestkitError:
    clone = _amended(exc, recovery_hint(staged, command))
    clone.manifest_url = staged.disk.manifest_url  # type: ignore[attr-defined]
    return clone


def _finish(
    client: Any,
    task: ConversionTask,
    wait: bool | WaitSettings,
    progress: Progress,
    on_update: Callable[[ConversionTask], None] | None,
    check: bool,
) -> ConversionTask:
    if wait is False:
        return task
    settings = wait if isinstance(wait, WaitSettings) else WaitSettings()
    final = ec2.wait_for_task(
        client, task.id, settings=settings, progress=progress, on_update=on_update
    )
    if check and not final.succeeded:
        raise ConversionTaskFailed(final)
    return final


def _import(
    action: str,
    command: str,
    make_spec: Callable[[DiskImageSpec], Spec],
    dry_run: Callable[[Any, Spec], bool],
    call: Callable[[Any, Spec], ConversionTask],
    request: ImportInstanceRequest | ImportVolumeRequest,
    settings: AwsSettings,
    *,
    wait: bool | WaitSettings,
    progress: Progress,
    on_update: Callable[[ConversionTask], None] | None,
    notify: Callable[[str], None],
    check: bool,
    preflight: bool,
) -> ConversionTask:
    """Preflight, stage the disk image, make the ``action`` call (``dry_run``/``call`` take the
    EC2 client and ``make_spec(disk)``), then follow the task: import_instance and import_volume
    differ only in the spec and the calls."""
    client = ec2_client(make_session(settings), settings)
    if preflight and request.upload is not None:
        _preflight(
            action,
            lambda c, disk: dry_run(c, make_spec(disk)),
            client,
            request.upload,
            request.volume_gib,
            settings,
        )
    staged = _stage(
        request.upload,
        request.manifest_url,
        request.volume_gib,
        request.no_upload,
        settings,
        progress,
        notify,
    )
    try:
        task = call(client, make_spec(staged.disk))
    except ManifestkitError as exc:
        if staged.uploaded:
            raise _with_recovery(exc, staged, command) from exc
        raise
    return _finish(client, task, wait, progress, on_update, check)


def import_instance(
    request: ImportInstanceRequest,
    settings: AwsSettings,
    *,
    wait: bool | WaitSettings = False,
    progress: Progress | None = None,
    on_update: Callable[[ConversionTask], None] | None = None,
    notify: Callable[[str], None] | None = None,
    check: bool = True,
    preflight: bool = True,
) -> ConversionTask:
    """Upload (unless ``manifest_url``), call ImportInstance, and with ``wait`` follow the task.

    Returns the task (the final one when waiting). With ``wait`` and ``check``, a task that ends
    cancelled raises ``ConversionTaskFailed`` (its ``task`` has EC2's status message). With
    ``preflight``, EC2's DryRun of the call runs before anything is uploaded.
    """
    notify = notify or log.warning
    _warn_platform(request.platform, notify)

    def spec_for(disk: DiskImageSpec) -> InstanceImportSpec:
        return InstanceImportSpec(
            disk=disk,
            platform=request.platform,
            launch=request.launch,
            description=request.description,
        )

    return _import(
        "ImportInstance",
        "import-instance",
        spec_for,
        ec2.dry_run_import_instance,
        ec2.import_instance,
        request,
        settings,
        wait=wait,
        progress=progress or NoProgress(),
        on_update=on_update,
        notify=notify,
        check=check,
        preflight=preflight,
    )


def import_volume(
    request: ImportVolumeRequest,
    settings: AwsSettings,
    *,
    wait: bool | WaitSettings = False,
    progress: Progress | None = None,
    on_update: Callable[[ConversionTask], None] | None = None,
    notify: Callable[[str], None] | None = None,
    check: bool = True,
    preflight: bool = True,
) -> ConversionTask:
    """Upload (unless ``manifest_url``), call ImportVolume, and with ``wait`` follow the task.

    Returns and raises as ``import_instance`` does.
    """

    def spec_for(disk: DiskImageSpec) -> VolumeImportSpec:
        return VolumeImportSpec(
            disk=disk,
            availability_zone=request.availability_zone,
            description=request.description,
        )

    return _import(
        "ImportVolume",
        "import-volume",
        spec_for,
        ec2.dry_run_import_volume,
        ec2.import_volume,
        request,
        settings,
        wait=wait,
        progress=progress or NoProgress(),
        on_update=on_update,
        notify=notify or log.warning,
        check=check,
        preflight=preflight,
    )


def _check_bucket(upload: UploadRequest | None, settings: AwsSettings) -> None:
    """What the real run checks before it sends a byte: the bucket exists (unless it would be
    created) and is in the EC2 region. EC2's DryRun checks only the call's permission, so a
    missing bucket passed a dry run and failed the real one."""
    if upload is None or not upload.bucket:
        return
    from manifestkit.aws import region_of, s3_client
    from manifestkit.s3.bucket_checks import bucket_region, ensure_bucket
    from manifestkit.s3.bucket_names import validate_bucket_name

    validate_bucket_name(upload.bucket)
    session = make_session(settings)
    s3 = s3_client(session, settings)
    owner = upload.bucket_owner
    if upload.create_bucket and bucket_region(s3, upload.bucket, expected_owner=owner) is None:
        return  # the real run creates it
    ensure_bucket(
        s3,
        upload.bucket,
        ec2_region=region_of(session),
        ignore_region_affinity=upload.ignore_region_affinity,
        expected_owner=owner,
    )


def check_import_instance(
    request: ImportInstanceRequest,
    settings: AwsSettings,
    *,
    notify: Callable[[str], None] | None = None,
) -> bool:
    """EC2's DryRun of the ImportInstance a real run would send; nothing is uploaded.

    True when EC2 answers DryRunOperation (allowed), False for UnauthorizedOperation.
    """
    _warn_platform(request.platform, notify or log.warning)
    disk = _dry_run_disk(request.upload, request.manifest_url, request.volume_gib, settings)
    _check_bucket(request.upload, settings)
    spec = InstanceImportSpec(
        disk=disk,
        platform=request.platform,
        launch=request.launch,
        description=request.description,
    )
    return ec2.dry_run_import_instance(ec2_client(make_session(settings), settings), spec)


def check_import_volume(request: ImportVolumeRequest, settings: AwsSettings) -> bool:
    """EC2's DryRun of the ImportVolume a real run would send; nothing is uploaded."""
    disk = _dry_run_disk(request.upload, request.manifest_url, request.volume_gib, settings)
    _check_bucket(request.upload, settings)
    spec = VolumeImportSpec(
        disk=disk, availability_zone=request.availability_zone, description=request.description
    )
    return ec2.dry_run_import_volume(ec2_client(make_session(settings), settings), spec)
