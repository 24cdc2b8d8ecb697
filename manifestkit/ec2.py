"""EC2 conversion tasks: ImportInstance, ImportVolume, DescribeConversionTasks, CancelConversionTask

Requests are built from frozen dataclasses (``InstanceImportSpec``, ``VolumeImportSpec``,
``LaunchSpec``) and answers come back as ``ConversionTask``; wire names appear only in this module.
API reference: the EC2 API Reference for ImportInstance (../shared/seed-ImportInstance.txt) and
botocore's ``ec2`` service model.

Quirks handled here, all seen on the real service:

- ``volume/id`` is empty while a task is still active, and may lag a moment behind ``completed``;
- a freshly created task id may not be visible to DescribeConversionTasks for a moment;
- at most 5 conversion tasks may be active per account (``ResourceLimitExceeded`` beyond);
- the service cancels a task itself (bad manifest, unreadable part, expiry) and says why in
  ``statusMessage``;
- a task whose upload is not finished expires about 7 days after creation (``expirationTime``).
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import unquote, urlsplit

import botocore.exceptions

from manifestkit.errors import (
    CredentialsError,
    ManifestkitError,
    RemoteError,
    TaskFailed,
    UsageError,
)
from manifestkit.images.info import FORMATS
from manifestkit.progress import NoProgress, Progress

log = logging.getLogger("manifestkit.ec2")

#: The only Platform value EC2 documents for ImportInstance (seed: "Valid Values: Windows").
#: Anything else (``Linux`` for EC2-compatible clouds and the classic tools) is passed through
#: with a warning by the caller.
DOCUMENTED_PLATFORM = "Windows"
SHUTDOWN_BEHAVIORS = ("stop", "terminate")
#: EC2's limit on conversion tasks active at once per account (design.md §4).
ACTIVE_TASK_LIMIT = 5

ACTIVE_STATES = ("active", "cancelling")
FINAL_STATES = ("completed", "cancelled")

#: Error codes that mean "these credentials are wrong, expired, or lack permission".
_CREDENTIAL_CODES = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "RequestExpired",
        "ExpiredToken",
        "ExpiredTokenException",
        "UnrecognizedClientException",
        "OptInRequired",
        "UnauthorizedOperation",
    }
)
#: Error codes that mean "the request itself is wrong" (exit 2: fix the input).
_BAD_INPUT_CODES = frozenset(
    {
        "InvalidParameter",
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "MissingParameter",
        "UnknownParameter",
        "InvalidInput",
        "InvalidManifest",
        "InvalidAMIAttributeItemValue",
    }
)
_NOT_FOUND_CODES = frozenset({"InvalidConversionTaskId.NotFound", "InvalidConversionTaskId"})

# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class DiskImageSpec:
    """One disk image as ImportInstance's ``DiskImage`` / ImportVolume's ``Image`` + ``Volume``."""

    #: ``VMDK`` | ``VHD`` | ``RAW``
    format: str
    #: the uploaded file's size: ``Image.Bytes`` and the manifest's ``<size>`` (design.md §2)
    file_bytes: int
    manifest_url: str
    #: ``Volume.Size`` in GiB
    volume_gib: int
    description: str | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise UsageError(
                f"image format {self.format!r} is not one EC2 imports",
                fix=f"use one of {', '.join(FORMATS)}",
            )
        if self.file_bytes <= 0:
            raise UsageError(f"image size {self.file_bytes} must be positive")
        if self.volume_gib < 1:
            raise UsageError(f"volume size {self.volume_gib} GiB must be at least 1")
        if not self.manifest_url:
            raise UsageError("no manifest URL", fix="upload the image or pass --manifest-url URL")


@dataclass(frozen=True)
class LaunchSpec:
    """ImportInstance's ``LaunchSpecification``; ``None`` leaves a field to EC2's default."""

    architecture: str | None = None
    #: passed through unchecked: EC2 knows which types it offers, we do not
    instance_type: str | None = None
    group_names: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    subnet_id: str | None = None
    private_ip_address: str | None = None
    availability_zone: str | None = None
    monitoring: bool | None = None
    #: ``stop`` | ``terminate``
    shutdown_behavior: str | None = None
    #: the raw user data; base64-encoded on the wire by ``_launch_params`` (botocore encodes
    #: UserData only for RunInstances, not for ImportInstance's ``UserData.Data``)
    user_data: bytes | None = None
    additional_info: str | None = None

    def __post_init__(self) -> None:
        if self.shutdown_behavior is not None and self.shutdown_behavior not in SHUTDOWN_BEHAVIORS:
            raise UsageError(
                f"shutdown behaviour {self.shutdown_behavior!r} is not valid",
                fix="use stop or terminate",
            )


@dataclass(frozen=True)
class InstanceImportSpec:
    """Everything one ImportInstance call sends."""

    disk: DiskImageSpec
    platform: str = "Windows"
    launch: LaunchSpec = field(default_factory=LaunchSpec)
    description: str | None = None


@dataclass(frozen=True)
class VolumeImportSpec:
    """Everything one ImportVolume call sends."""

    disk: DiskImageSpec
    availability_zone: str
    description: str | None = None

    def __post_init__(self) -> None:
        if not self.availability_zone:
            raise UsageError(
                "ImportVolume needs an availability zone", fix="pass -z/--availability-zone ZONE"
            )


def _launch_params(spec: LaunchSpec) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if spec.architecture:
        params["Architecture"] = spec.architecture
    if spec.instance_type:
        params["InstanceType"] = spec.instance_type
    if spec.group_names:
        params["GroupNames"] = list(spec.group_names)
    if spec.group_ids:
        params["GroupIds"] = list(spec.group_ids)
    if spec.subnet_id:
        params["SubnetId"] = spec.subnet_id
    if spec.private_ip_address:
        params["PrivateIpAddress"] = spec.private_ip_address
    if spec.availability_zone:
        params["Placement"] = {"AvailabilityZone": spec.availability_zone}
    if spec.monitoring is not None:
        # ImportInstanceLaunchSpecification.Monitoring is a plain boolean (unlike RunInstances')
        params["Monitoring"] = spec.monitoring
    if spec.shutdown_behavior:
        params["InstanceInitiatedShutdownBehavior"] = spec.shutdown_behavior
    if spec.user_data is not None:
        params["UserData"] = {"Data": base64.b64encode(spec.user_data).decode("ascii")}
    if spec.additional_info:
        params["AdditionalInfo"] = spec.additional_info
    return params


def _image_params(disk: DiskImageSpec) -> dict[str, Any]:
    return {
        "Format": disk.format,
        "Bytes": disk.file_bytes,
        "ImportManifestUrl": disk.manifest_url,
    }


def import_instance_params(spec: InstanceImportSpec) -> dict[str, Any]:
    """The keyword arguments of boto3's ``import_instance`` for ``spec`` (wire names live here)."""
    disk: dict[str, Any] = {
        "Image": _image_params(spec.disk),
        "Volume": {"Size": spec.disk.volume_gib},
    }
    if spec.disk.description:
        disk["Description"] = spec.disk.description
    params: dict[str, Any] = {"Platform": spec.platform, "DiskImages": [disk]}
    launch = _launch_params(spec.launch)
    if launch:
        params["LaunchSpecification"] = launch
    if spec.description:
        params["Description"] = spec.description
    return params


def import_volume_params(spec: VolumeImportSpec) -> dict[str, Any]:
    """The keyword arguments of boto3's ``import_volume`` for ``spec``."""
    params: dict[str, Any] = {
        "AvailabilityZone": spec.availability_zone,
        "Image": _image_params(spec.disk),
        "Volume": {"Size": spec.disk.volume_gib},
    }
    description = spec.description or spec.disk.description
    if description:
        params["Description"] = description
    return params


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class ConversionTask:
    """One conversion task as DescribeConversionTasks reports it."""

    id: str
    #: ``instance`` | ``volume``
    kind: str
    #: ``active`` | ``cancelling`` | ``cancelled`` | ``completed``
    state: str
    status_message: str = ""
    #: as EC2 spells it (e.g. ``2010-12-22T12:01Z``); see ``expires_at``
    expiration_time: str | None = None
    bytes_converted: int = 0
    #: ``Image.Size``: the uploaded image's bytes
    image_bytes: int = 0
    image_format: str | None = None
    manifest_url: str | None = None
    volume_gib: int | None = None
    availability_zone: str | None = None
    instance_id: str | None = None
    #: empty while the task is active (EC2 assigns them at the end)
    volume_ids: tuple[str, ...] = ()
    platform: str | None = None
    description: str | None = None

    @property
    def is_active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def succeeded(self) -> bool:
        return self.state == "completed"

    @property
    def expires_at(self) -> datetime | None:
        return parse_expiration(self.expiration_time)

    @property
    def volume_id(self) -> str | None:
        return self.volume_ids[0] if self.volume_ids else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "status_message": self.status_message,
            "expiration_time": self.expiration_time,
            "bytes_converted": self.bytes_converted,
            "image_bytes": self.image_bytes,
            "image_format": self.image_format,
            "manifest_url": self.manifest_url,
            "volume_gib": self.volume_gib,
            "availability_zone": self.availability_zone,
            "instance_id": self.instance_id,
            "volume_ids": list(self.volume_ids),
            "platform": self.platform,
            "description": self.description,
        }

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ConversionTask:
        """Build from one ``ConversionTask`` structure of a boto3 answer."""
        common = {
            "id": data["ConversionTaskId"],
            "state": data.get("State", "unknown"),
            "status_message": data.get("StatusMessage") or "",
            "expiration_time": data.get("ExpirationTime") or None,
        }
        if "ImportInstance" in data:
            instance = data["ImportInstance"]
            volumes = instance.get("Volumes") or []
            first = volumes[0] if volumes else {}
            image = first.get("Image") or {}
            # a volume's own status message is more precise than the task's when the task has none
            message = common["status_message"] or next(
                (v.get("StatusMessage") for v in volumes if v.get("StatusMessage")), ""
            )
            return cls(
                **{**common, "status_message": message},
                kind="instance",
                bytes_converted=sum(int(v.get("BytesConverted") or 0) for v in volumes),
                image_bytes=sum(int((v.get("Image") or {}).get("Size") or 0) for v in volumes),
                image_format=image.get("Format"),
                manifest_url=image.get("ImportManifestUrl"),
                volume_gib=(first.get("Volume") or {}).get("Size"),
                availability_zone=first.get("AvailabilityZone"),
                instance_id=instance.get("InstanceId") or None,
                volume_ids=tuple(
                    v["Volume"]["Id"] for v in volumes if (v.get("Volume") or {}).get("Id")
                ),
                platform=instance.get("Platform"),
                description=instance.get("Description") or None,
            )
        volume = data.get("ImportVolume") or {}
        image = volume.get("Image") or {}
        volume_id = (volume.get("Volume") or {}).get("Id")
        return cls(
            **common,
            kind="volume",
            bytes_converted=int(volume.get("BytesConverted") or 0),
            image_bytes=int(image.get("Size") or 0),
            image_format=image.get("Format"),
            manifest_url=image.get("ImportManifestUrl"),
            volume_gib=(volume.get("Volume") or {}).get("Size"),
            availability_zone=volume.get("AvailabilityZone"),
            volume_ids=(volume_id,) if volume_id else (),
            description=volume.get("Description") or None,
        )


def parse_expiration(text: str | None) -> datetime | None:
    """EC2's ``expirationTime``: ISO 8601 UTC, with or without seconds (``2010-12-22T12:01Z``)."""
    if not text:
        return None
    cleaned = text.strip().replace("Z", "+00:00")
    for candidate in (cleaned, cleaned.replace(" ", "T")):
        try:
            moment = datetime.fromisoformat(candidate)
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    for pattern in ("%Y-%m-%dT%H:%M%z", "%a %b %d %H:%M:%S %Z %Y"):
        try:
            moment = datetime.strptime(cleaned, pattern)
        except ValueError:
            continue
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return None


# --------------------------------------------------------------------------- calls


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _message(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", "")) or str(exc)


def translate_error(exc: Exception, *, action: str, task_id: str | None = None) -> ManifestkitError:
    """One ``ManifestkitError`` leaf for a botocore failure of ``action``, with a fix."""
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return CredentialsError(
            "no AWS credentials found",
            fix="configure them (aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY), or try the offline sandbox with --local",
        )
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return RemoteError(
            f"{action}: cannot reach the EC2 endpoint ({exc})",
            fix="check --ec2-endpoint-url / AWS_ENDPOINT_URL_EC2 and the network",
        )
    if isinstance(exc, botocore.exceptions.ClientError):
        code, message = _code(exc), _message(exc)
        if code in _NOT_FOUND_CODES:
            what = f"conversion task {task_id}" if task_id else "the conversion task"
            return RemoteError(
                f"{what} does not exist ({code})",
                fix="check the id and --region; manifestkit tasks lists the tasks EC2 knows",
            )
        if code == "ResourceLimitExceeded":
            return RemoteError(
                f"you already have {ACTIVE_TASK_LIMIT} active conversion tasks ({message})",
                fix="wait for one or cancel it with manifestkit cancel ID "
                "(manifestkit tasks lists them)",
            )
        if code == "UnauthorizedOperation":
            return CredentialsError(
                f"{action}: these credentials are not allowed to call it ({code}: {message})",
                fix=f"grant ec2:{action} to this user or role, or use other credentials",
            )
        if code in _CREDENTIAL_CODES:
            return CredentialsError(
                f"{action}: EC2 refused the credentials ({code}: {message})",
                fix="check the access key, secret key and clock, or refresh expired credentials",
            )
        if code in _BAD_INPUT_CODES or code.endswith(".Malformed"):
            return UsageError(f"{action}: EC2 rejected the request ({code}: {message})")
        return RemoteError(f"{action} failed ({code}: {message})")
    if isinstance(exc, botocore.exceptions.BotoCoreError):
        return RemoteError(f"{action} failed: {exc}")
    raise exc


def _call(ec2: Any, action: str, method: str, *, task_id: str | None = None, **params: Any) -> Any:
    try:
        return getattr(ec2, method)(**params)
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        raise translate_error(exc, action=action, task_id=task_id) from exc


def _dry_run(ec2: Any, action: str, method: str, params: dict[str, Any]) -> bool:
    try:
        getattr(ec2, method)(DryRun=True, **params)
    except botocore.exceptions.ClientError as exc:
        code = _code(exc)
        if code == "DryRunOperation":
            return True
        if code == "UnauthorizedOperation":
            return False
        raise translate_error(exc, action=action) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise translate_error(exc, action=action) from exc
    # a server that ignores DryRun and created a task: say so rather than pretend
    raise RemoteError(
        f"{action} with DryRun created a real task: the endpoint ignores DryRun",
        fix="list it with manifestkit tasks and cancel it with manifestkit cancel ID",
    )


def import_instance(ec2: Any, spec: InstanceImportSpec) -> ConversionTask:
    answer = _call(ec2, "ImportInstance", "import_instance", **import_instance_params(spec))
    return ConversionTask.from_api(answer["ConversionTask"])


def import_volume(ec2: Any, spec: VolumeImportSpec) -> ConversionTask:
    answer = _call(ec2, "ImportVolume", "import_volume", **import_volume_params(spec))
    return ConversionTask.from_api(answer["ConversionTask"])


def dry_run_import_instance(ec2: Any, spec: InstanceImportSpec) -> bool:
    """EC2's own DryRun: True when the call would have been allowed (``DryRunOperation``)."""
    return _dry_run(ec2, "ImportInstance", "import_instance", import_instance_params(spec))


def dry_run_import_volume(ec2: Any, spec: VolumeImportSpec) -> bool:
    return _dry_run(ec2, "ImportVolume", "import_volume", import_volume_params(spec))


def describe_tasks(ec2: Any, task_ids: Sequence[str] = ()) -> list[ConversionTask]:
    """The tasks named, or every task EC2 still reports when ``task_ids`` is empty."""
    params: dict[str, Any] = {"ConversionTaskIds": list(task_ids)} if task_ids else {}
    only = task_ids[0] if len(task_ids) == 1 else None
    answer = _call(
        ec2, "DescribeConversionTasks", "describe_conversion_tasks", task_id=only, **params
    )
    return [ConversionTask.from_api(item) for item in answer.get("ConversionTasks") or []]


def describe_task(ec2: Any, task_id: str) -> ConversionTask:
    for task in describe_tasks(ec2, [task_id]):
        if task.id == task_id:
            return task
    raise RemoteError(
        f"conversion task {task_id} does not exist",
        fix="check the id and --region; manifestkit tasks lists the tasks EC2 knows",
    )


def cancel_task(ec2: Any, task_id: str, reason: str | None = None) -> None:
    params: dict[str, Any] = {"ConversionTaskId": task_id}
    if reason:
        params["ReasonMessage"] = reason
    _call(ec2, "CancelConversionTask", "cancel_conversion_task", task_id=task_id, **params)


def active_tasks(ec2: Any) -> list[ConversionTask]:
    return [task for task in describe_tasks(ec2) if task.is_active]


# --------------------------------------------------------------------------- manifests in use


def _object_ref(url_or_key: str) -> tuple[str | None, str]:
    """``(bucket, key)`` of a manifest URL (path or virtual-hosted style), or ``(None, key)``."""
    text = url_or_key.strip()
    if "://" not in text:
        return None, unquote(text.lstrip("/"))
    parts = urlsplit(text)
    host = (parts.hostname or "").lower()
    path = unquote(parts.path).lstrip("/")
    # virtual-hosted style: {bucket}.s3.{region}.amazonaws.com / {bucket}.s3.amazonaws.com
    for marker in (".s3.", ".s3-"):
        if marker in host:
            return host.split(marker, 1)[0], path
    bucket, _, key = path.partition("/")
    return bucket, key


def _same_object(candidate: str, wanted: str) -> bool:
    cand_bucket, cand_key = _object_ref(candidate)
    want_bucket, want_key = _object_ref(wanted)
    if not cand_key or not want_key:
        return False
    if want_bucket is None:
        # a bare key, possibly "bucket/key": match on the key's tail
        return cand_key == want_key or f"{cand_bucket}/{cand_key}" == want_key
    return cand_key == want_key and (cand_bucket == want_bucket or cand_bucket is None)


def find_active_task_for_manifest(ec2_client: Any, manifest_url_or_key: str) -> str | None:
    """The id of an active (or cancelling) task importing this manifest, else None.

    ``manifest_url_or_key`` is the manifest's presigned URL, any URL of the same object, an S3 key,
    or ``bucket/key``. URLs are compared by bucket and key, never by signature: the task holds the
    URL it was created with, the caller may hold a fresher one.
    """
    for task in describe_tasks(ec2_client):
        if (
            task.is_active
            and task.manifest_url
            and _same_object(task.manifest_url, manifest_url_or_key)
        ):
            return task.id
    return None


# --------------------------------------------------------------------------- waiting


@dataclass(frozen=True)
class WaitSettings:
    """How ``wait_for_task`` polls; ``clock`` and ``sleep`` are injectable for tests."""

    interval: float = 15.0
    #: give up (TaskFailed) after this many seconds; None waits as long as the task lives
    timeout: float | None = None
    #: how long a just-created task may be invisible to DescribeConversionTasks
    visibility_grace: float = 60.0
    #: how long ``completed`` may come without its volume ids before we return anyway
    volume_id_grace: float = 30.0
    #: how long past ``expirationTime`` an active task is given before we call it expired
    expiry_grace: float = 3600.0
    clock: Callable[[], float] = time.time
    sleep: Callable[[float], None] = time.sleep


def _expired(task: ConversionTask, now: float, grace: float) -> bool:
    expires = task.expires_at
    return expires is not None and task.is_active and now > expires.timestamp() + grace


def wait_for_task(
    ec2: Any,
    task_id: str,
    *,
    settings: WaitSettings = WaitSettings(),
    progress: Progress | None = None,
    on_update: Callable[[ConversionTask], None] | None = None,
) -> ConversionTask:
    """Poll until the task is ``completed`` or ``cancelled``; return the last answer.

    Progress is reported in bytes converted against the image's size. ``on_update`` is called
    whenever the state or status message changes. The caller decides what a cancelled task means.
    """
    progress = progress or NoProgress()
    started = settings.clock()
    seen_total = 0
    reported = 0
    last_key: tuple[str, str] | None = None
    completed_at: float | None = None
    try:
        while True:
            now = settings.clock()
            try:
                task = describe_task(ec2, task_id)
            except RemoteError as exc:
                # a task created a moment ago may not be listed yet (eventual consistency)
                if "does not exist" in exc.message and now - started < settings.visibility_grace:
                    settings.sleep(settings.interval)
                    continue
                raise
            if task.image_bytes and task.image_bytes != seen_total:
                seen_total = task.image_bytes
                progress.start(seen_total, f"converting {task.id}")
                reported = 0
            if task.bytes_converted > reported:
                progress.advance(task.bytes_converted - reported)
                reported = task.bytes_converted
            key = (task.state, task.status_message)
            if key != last_key:
                last_key = key
                if on_update is not None:
                    on_update(task)
            if task.state == "completed":
                # volume ids can lag behind the state: look again a few times before returning
                completed_at = completed_at if completed_at is not None else now
                if task.volume_ids or now - completed_at >= settings.volume_id_grace:
                    return task
            elif task.is_final:
                return task
            elif _expired(task, now, settings.expiry_grace):
                raise TaskFailed(
                    f"conversion task {task.id} expired at {task.expiration_time} while "
                    f"still {task.state}",
                    fix="upload again and start a new import "
                    "(manifestkit import-instance IMAGE ...)",
                )
            if settings.timeout is not None and now - started >= settings.timeout:
                raise TaskFailed(
                    f"conversion task {task.id} is still {task.state} after "
                    f"{int(settings.timeout)} s",
                    fix=f"follow it with manifestkit tasks {task.id} --watch",
                )
            settings.sleep(settings.interval)
    finally:
        progress.close()


def watch_tasks(
    ec2: Any,
    task_ids: Sequence[str],
    *,
    settings: WaitSettings = WaitSettings(),
    on_change: Callable[[ConversionTask], None],
    on_poll: Callable[[list[ConversionTask]], None] | None = None,
) -> list[ConversionTask]:
    """Poll the named tasks (or those active now, when none are named) until each is final.

    ``on_change`` gets a task each time its state or status message changes (and once at the
    start); ``on_poll`` gets every answer, for progress bars. Returns the last answers.
    """
    if task_ids:
        ids = list(dict.fromkeys(task_ids))
    else:
        ids = [task.id for task in active_tasks(ec2)]
    last: dict[str, tuple[str, str]] = {}
    latest: dict[str, ConversionTask] = {}
    started = settings.clock()
    while ids:
        answers = {task.id: task for task in describe_tasks(ec2, ids)}
        missing = [task_id for task_id in ids if task_id not in answers]
        if missing and task_ids and not latest:
            raise RemoteError(
                f"conversion task {missing[0]} does not exist",
                fix="check the id and --region; manifestkit tasks lists the tasks EC2 knows",
            )
        latest.update(answers)
        if on_poll is not None:
            on_poll([latest[i] for i in ids if i in latest])
        for task_id in ids:
            task = latest.get(task_id)
            if task is None:
                continue
            key = (task.state, task.status_message)
            if last.get(task_id) != key:
                last[task_id] = key
                on_change(task)
        if all(task_id in latest and latest[task_id].is_final for task_id in ids):
            break
        if settings.timeout is not None and settings.clock() - started >= settings.timeout:
            break
        settings.sleep(settings.interval)
    return [latest[i] for i in ids if i in latest]


def require_success(task: ConversionTask) -> ConversionTask:
    """``task`` when it completed; TaskFailed with EC2's status message otherwise."""
    if task.succeeded:
        return task
    message = task.status_message or "no status message"
    raise TaskFailed(f"conversion task {task.id} ended {task.state}: {message}")


def iter_ids(values: Iterable[str]) -> list[str]:
    """Task ids from the command line, split on commas too (``import-i-1,import-i-2``)."""
    ids: list[str] = []
    for value in values:
        ids.extend(part.strip() for part in value.split(",") if part.strip())
    return ids
