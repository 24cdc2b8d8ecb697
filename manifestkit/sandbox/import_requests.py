"""Parse and validate the EC2 Query requests of the import API the way EC2 validates them.

Parameter names are the wire names botocore's ec2 model serialises (``DiskImage.1.Image.Format``,
``LaunchSpecification.Placement.AvailabilityZone``, ``Image.Bytes``, ``Volume.Size``,
``ConversionTaskId.N``...). Every rule that EC2 enforces before a task exists lives here and answers
with EC2's own error codes; rules that need the uploaded bytes run later, in the conversion task.

Deliberate choices (documented for users of the sandbox):

* ``Platform``: required for ImportInstance. The API reference lists ``Windows``; the service has
  accepted ``Linux`` since VM Import gained Linux support, and EC2-compatible clouds accept it, so
  both are accepted (case-insensitively) and echoed in canonical case. Anything else is
  InvalidParameterValue.
* ``Format``: VMDK, RAW or VHD, compared case-insensitively and echoed upper-case.
* ``Volume.Size`` (GiB) must hold ``Image.Bytes``; a smaller volume is ``InvalidParameter``
  (the check against the image's virtual capacity needs the bytes: the task does it).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from manifestkit.sizes import GiB

FORMATS = ("VMDK", "RAW", "VHD")
PLATFORMS = ("Windows", "Linux")
ARCHITECTURES = ("i386", "x86_64", "arm64")
SHUTDOWN_BEHAVIOURS = ("stop", "terminate")
#: EBS volume sizes are whole GiB, 1..16384 (16 TiB), the ceiling of gp2/gp3/standard volumes.
MAX_VOLUME_GIB = 16384
#: design.md §3: any image must be under 16 TiB.
MAX_IMAGE_BYTES = 16 * 1024 * GiB

#: ``import-i-ffvko9js`` / ``import-vol-ffvko9js`` (the API reference's examples).
TASK_ID_PATTERN = re.compile(r"^import-(i|vol)-[a-z0-9]{8,17}$")


class Ec2ApiError(Exception):
    """An EC2 error answer: ``<Response><Errors><Error><Code>`` with an HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


def dry_run_error() -> Ec2ApiError:
    return Ec2ApiError(
        "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412
    )


def missing(name: str) -> Ec2ApiError:
    return Ec2ApiError("MissingParameter", f"The request must contain the parameter {name}")


def invalid_value(name: str, value: str, why: str = "") -> Ec2ApiError:
    message = f"Value ({value}) for parameter {name} is invalid."
    return Ec2ApiError("InvalidParameterValue", f"{message} {why}".strip())


@dataclass(frozen=True)
class DiskImageSpec:
    #: ``VMDK`` | ``RAW`` | ``VHD``
    format: str
    #: ``Image.Bytes``: the size of the uploaded file
    bytes: int
    manifest_url: str
    #: ``Volume.Size`` in GiB
    volume_gib: int
    description: str = ""


@dataclass(frozen=True)
class LaunchSpec:
    architecture: str = "x86_64"
    instance_type: str | None = None
    group_names: tuple[str, ...] = ()
    group_ids: tuple[str, ...] = ()
    additional_info: str = ""
    #: base64 text as sent (already checked to decode)
    user_data: str | None = None
    availability_zone: str | None = None
    monitoring: bool = False
    subnet_id: str | None = None
    shutdown_behaviour: str = "stop"
    private_ip: str | None = None


@dataclass(frozen=True)
class ImportInstanceRequest:
    platform: str
    disk: DiskImageSpec
    launch: LaunchSpec
    description: str = ""


@dataclass(frozen=True)
class ImportVolumeRequest:
    availability_zone: str
    disk: DiskImageSpec
    description: str = ""


@dataclass(frozen=True)
class CancelRequest:
    task_id: str
    reason: str = ""


def is_dry_run(params: Mapping[str, str]) -> bool:
    return parse_bool(params, "DryRun", default=False)


def parse_bool(params: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise invalid_value(name, raw, "Expected true or false.")


def parse_positive_int(params: Mapping[str, str], name: str, *, maximum: int) -> int:
    raw = params.get(name)
    if raw is None or raw.strip() == "":
        raise missing(name)
    try:
        value = int(raw.strip())
    except ValueError:
        raise invalid_value(name, raw, "Expected a whole number.") from None
    if not 1 <= value <= maximum:
        raise invalid_value(name, raw, f"Expected a number between 1 and {maximum}.")
    return value


def list_param(params: Mapping[str, str], prefix: str) -> tuple[str, ...]:
    """``Prefix.1``, ``Prefix.2``... in index order (EC2 flattened lists are 1-based)."""
    found: list[tuple[int, str]] = []
    pattern = re.compile(re.escape(prefix) + r"\.(\d+)$")
    for name, value in params.items():
        match = pattern.match(name)
        if match:
            found.append((int(match.group(1)), value))
    return tuple(value for _, value in sorted(found))


def parse_disk_image(params: Mapping[str, str], prefix: str) -> DiskImageSpec:
    """``{p}Image.Format|Bytes|ImportManifestUrl``, ``{p}Volume.Size``, ``{p}Description``."""
    fmt_name = f"{prefix}Image.Format"
    raw_format = params.get(fmt_name, "").strip()
    if not raw_format:
        raise missing(fmt_name)
    fmt = raw_format.upper()
    if fmt not in FORMATS:
        raise invalid_value(fmt_name, raw_format, f"Valid values: {', '.join(FORMATS)}.")
    image_bytes = parse_positive_int(params, f"{prefix}Image.Bytes", maximum=MAX_IMAGE_BYTES - 1)
    url_name = f"{prefix}Image.ImportManifestUrl"
    url = params.get(url_name, "").strip()
    if not url:
        raise missing(url_name)
    check_manifest_url(url_name, url)
    volume_gib = parse_positive_int(params, f"{prefix}Volume.Size", maximum=MAX_VOLUME_GIB)
    if volume_gib * GiB < image_bytes:
        raise Ec2ApiError(
            "InvalidParameter",
            f"The volume size ({volume_gib} GiB) is smaller than the disk image "
            f"({image_bytes} bytes); specify {prefix}Volume.Size of at least "
            f"{-(-image_bytes // GiB)} GiB.",
        )
    return DiskImageSpec(
        format=fmt,
        bytes=image_bytes,
        manifest_url=url,
        volume_gib=volume_gib,
        description=params.get(f"{prefix}Description", ""),
    )


def check_manifest_url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid_value(name, url, "The import manifest URL must be an http(s) URL.")


def is_loopback_host(host: str | None) -> bool:
    """The sandbox only ever contacts loopback addresses (team rule: never leave 127.0.0.1)."""
    if not host:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_zone(
    params: Mapping[str, str],
    name_param: str,
    id_param: str | None,
    zones: Mapping[str, str],
    region: str,
) -> str | None:
    """The zone name from ``name_param`` or ``id_param`` (a zone id such as ``use1-az1``).

    ``zones`` maps zone name -> zone id for the region. Both given -> InvalidParameterCombination.
    """
    name = params.get(name_param, "").strip()
    zone_id = params.get(id_param, "").strip() if id_param else ""
    if name and zone_id:
        raise Ec2ApiError(
            "InvalidParameterCombination",
            f"Specify either {name_param} or {id_param}, not both.",
        )
    if name:
        if name not in zones:
            raise Ec2ApiError(
                "InvalidParameterValue",
                f"Invalid availability zone: [{name}] (not a zone of region {region})",
            )
        return name
    if zone_id:
        for zone_name, known_id in zones.items():
            if known_id == zone_id:
                return zone_name
        raise Ec2ApiError(
            "InvalidParameterValue",
            f"Invalid availability zone id: [{zone_id}] (not a zone of region {region})",
        )
    return None


def parse_choice(
    params: Mapping[str, str], name: str, choices: tuple[str, ...], default: str
) -> str:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise invalid_value(name, raw, f"Valid values: {', '.join(choices)}.")


def parse_launch_spec(
    params: Mapping[str, str], zones: Mapping[str, str], region: str
) -> LaunchSpec:
    prefix = "LaunchSpecification."
    user_data = params.get(f"{prefix}UserData.Data")
    if user_data is None:
        # Before the UserData structure, the EC2 API tools sent LaunchSpecification.UserData itself.
        user_data = params.get(f"{prefix}UserData")
    if user_data:
        try:
            base64.b64decode(user_data.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise Ec2ApiError(
                "InvalidUserData.Malformed", "Invalid BASE64 encoding of user data."
            ) from None
    monitoring_name = f"{prefix}Monitoring"
    if f"{prefix}Monitoring.Enabled" in params:  # the 2010-era spelling
        monitoring_name = f"{prefix}Monitoring.Enabled"
    return LaunchSpec(
        architecture=parse_choice(params, f"{prefix}Architecture", ARCHITECTURES, "x86_64"),
        instance_type=params.get(f"{prefix}InstanceType", "").strip() or None,
        group_names=list_param(params, f"{prefix}GroupName"),
        group_ids=list_param(params, f"{prefix}GroupId"),
        additional_info=params.get(f"{prefix}AdditionalInfo", ""),
        user_data=user_data or None,
        availability_zone=parse_zone(
            params, f"{prefix}Placement.AvailabilityZone", None, zones, region
        ),
        monitoring=parse_bool(params, monitoring_name, default=False),
        subnet_id=params.get(f"{prefix}SubnetId", "").strip() or None,
        shutdown_behaviour=parse_choice(
            params, f"{prefix}InstanceInitiatedShutdownBehavior", SHUTDOWN_BEHAVIOURS, "stop"
        ),
        private_ip=params.get(f"{prefix}PrivateIpAddress", "").strip() or None,
    )


def parse_import_instance(
    params: Mapping[str, str], zones: Mapping[str, str], region: str
) -> ImportInstanceRequest:
    raw_platform = params.get("Platform", "").strip()
    if not raw_platform:
        raise missing("Platform")
    platform = parse_choice(params, "Platform", PLATFORMS, "")
    indices = sorted(
        {int(m.group(1)) for name in params if (m := re.match(r"DiskImage\.(\d+)\.", name))}
    )
    if not indices:
        raise missing("DiskImage.1.Image.Format")
    if len(indices) > 1:
        raise Ec2ApiError(
            "InvalidParameterValue",
            f"ImportInstance supports a single disk image; got {len(indices)}. "
            "Use ImportImage for multi-volume VMs.",
        )
    disk = parse_disk_image(params, f"DiskImage.{indices[0]}.")
    return ImportInstanceRequest(
        platform=platform,
        disk=disk,
        launch=parse_launch_spec(params, zones, region),
        description=params.get("Description", ""),
    )


def parse_import_volume(
    params: Mapping[str, str], zones: Mapping[str, str], region: str
) -> ImportVolumeRequest:
    zone = parse_zone(params, "AvailabilityZone", "AvailabilityZoneId", zones, region)
    if zone is None:
        raise missing("AvailabilityZone")
    return ImportVolumeRequest(
        availability_zone=zone,
        disk=parse_disk_image(params, ""),
        description=params.get("Description", ""),
    )


def check_task_id(task_id: str) -> str:
    if not TASK_ID_PATTERN.match(task_id):
        raise Ec2ApiError(
            "InvalidConversionTaskId.Malformed",
            f"The conversion task ID '{task_id}' is malformed; expected import-i-xxxxxxxx "
            "or import-vol-xxxxxxxx.",
        )
    return task_id


def parse_describe(params: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(
        check_task_id(task_id.strip()) for task_id in list_param(params, "ConversionTaskId")
    )


def parse_cancel(params: Mapping[str, str]) -> CancelRequest:
    task_id = params.get("ConversionTaskId", "").strip()
    if not task_id:
        raise missing("ConversionTaskId")
    return CancelRequest(task_id=check_task_id(task_id), reason=params.get("ReasonMessage", ""))
