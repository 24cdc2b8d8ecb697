"""EC2 calls of the AMI chain: snapshots, images, copies, launch and volume permissions, regions.

Requests are built from frozen dataclasses (``ImageSpec``) and answers come back as ``Snapshot``
and ``Image``; wire names appear only here (and in ``manifestkit.ec2`` for conversion tasks).
API reference: the EC2 API Reference (CreateSnapshot, RegisterImage, CopyImage,
ModifyImageAttribute, ModifySnapshotAttribute, DescribeRegions) and botocore's ``ec2`` model.

Quirks handled here, all documented by EC2:

- a new snapshot is ``pending`` (``error`` if it fails), an image ``pending`` (``failed``,
  ``error`` or ``invalid`` if it does not become ``available``);
- a just-created id may not be visible to Describe* for a moment (eventual consistency);
- an AMI name is unique per account and region (``InvalidAMIName.Duplicate``);
- making an AMI public does not make its snapshots usable by others: that is the snapshots'
  ``createVolumePermission``, set separately.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from manifestkit.ec2 import WaitSettings, translate_error
from manifestkit.errors import RemoteError, TaskFailed, UsageError

log = logging.getLogger("manifestkit.ec2")

ARCHITECTURES = ("x86_64", "arm64", "i386")
BOOT_MODES = ("legacy-bios", "uefi", "uefi-preferred")
VOLUME_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard")
DEFAULT_ROOT_DEVICE = "/dev/xvda"
DEFAULT_VOLUME_TYPE = "gp3"
#: the tag every resource of one ``import-ami`` run carries, so leftovers can be found
RUN_TAG = "manifestkit:run"

# EC2 API Reference, RegisterImage, Name: "Constraints: 3-128 alphanumeric characters,
# parentheses (()), square brackets ([]), spaces ( ), periods (.), slashes (/), dashes (-),
# single quotes ('), at-signs (@), or underscores(_)"
_AMI_NAME = re.compile(r"[A-Za-z0-9()\[\] ./\-'@_]+")
_ACCOUNT_ID = re.compile(r"\d{12}")
#: EC2 Image.State values after which an image will never become ``available``
_IMAGE_FAILED = ("failed", "error", "invalid", "deregistered")
_NOT_FOUND = (
    "InvalidSnapshot.NotFound",
    "InvalidAMIID.NotFound",
    "InvalidAMIID.Unavailable",
    "InvalidVolume.NotFound",
)


def check_ami_name(name: str) -> str:
    """``name`` when EC2 would accept it as an AMI name; UsageError saying what is wrong."""
    if not 3 <= len(name) <= 128:
        raise UsageError(
            f"AMI name {name!r} is {len(name)} characters long; EC2 wants 3 to 128",
            fix="choose another --name",
        )
    if not _AMI_NAME.fullmatch(name):
        bad = sorted({c for c in name if not _AMI_NAME.fullmatch(c)})
        raise UsageError(
            f"AMI name {name!r} has characters EC2 refuses ({''.join(bad)!r})",
            fix="use letters, digits, spaces and ( ) [ ] . / - ' @ _",
        )
    return name


def check_account_id(account: str) -> str:
    if not _ACCOUNT_ID.fullmatch(account):
        raise UsageError(
            f"--share-with {account!r} is not an AWS account id", fix="give the 12-digit account id"
        )
    return account


def check_register_options(
    *, architecture: str, boot_mode: str | None, tpm_support: str | None, volume_type: str
) -> None:
    """UsageError, named as ``import-ami``'s options, for RegisterImage values EC2 refuses."""
    if architecture not in ARCHITECTURES:
        raise UsageError(
            f"--architecture {architecture!r} is not one EC2 registers",
            fix=f"use one of {', '.join(ARCHITECTURES)}",
        )
    if boot_mode is not None and boot_mode not in BOOT_MODES:
        raise UsageError(
            f"--boot-mode {boot_mode!r} is not valid", fix=f"use one of {', '.join(BOOT_MODES)}"
        )
    if tpm_support is not None and boot_mode != "uefi":
        raise UsageError(
            "--tpm-support v2.0 needs --boot-mode uefi (NitroTPM works with UEFI only)",
            fix="add --boot-mode uefi, or leave out --tpm-support",
        )
    if volume_type not in VOLUME_TYPES:
        raise UsageError(
            f"--volume-type {volume_type!r} is not valid",
            fix=f"use one of {', '.join(VOLUME_TYPES)}",
        )


@dataclass(frozen=True)
class ImageSpec:
    """Everything one RegisterImage call sends (EBS-backed, hvm, one root volume)."""

    name: str
    snapshot_id: str
    volume_gib: int
    architecture: str = "x86_64"
    boot_mode: str | None = None
    ena_support: bool = False
    sriov_net_support: str | None = None
    root_device_name: str = DEFAULT_ROOT_DEVICE
    volume_type: str = DEFAULT_VOLUME_TYPE
    imds_support: str | None = None
    tpm_support: str | None = None
    description: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        check_ami_name(self.name)
        check_register_options(
            architecture=self.architecture,
            boot_mode=self.boot_mode,
            tpm_support=self.tpm_support,
            volume_type=self.volume_type,
        )
        if self.volume_gib < 1:
            raise UsageError(f"volume size {self.volume_gib} GiB must be at least 1")


def tag_list(tags: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"Key": key, "Value": value} for key, value in tags]


def register_image_params(spec: ImageSpec) -> dict[str, Any]:
    """The keyword arguments of boto3's ``register_image`` for ``spec``."""
    params: dict[str, Any] = {
        "Name": spec.name,
        "Architecture": spec.architecture,
        "RootDeviceName": spec.root_device_name,
        "VirtualizationType": "hvm",
        "BlockDeviceMappings": [
            {
                "DeviceName": spec.root_device_name,
                "Ebs": {
                    "SnapshotId": spec.snapshot_id,
                    "VolumeSize": spec.volume_gib,
                    "VolumeType": spec.volume_type,
                    "DeleteOnTermination": True,
                },
            }
        ],
    }
    if spec.boot_mode:
        params["BootMode"] = spec.boot_mode
    if spec.ena_support:
        params["EnaSupport"] = True
    if spec.sriov_net_support:
        params["SriovNetSupport"] = spec.sriov_net_support
    if spec.imds_support:
        params["ImdsSupport"] = spec.imds_support
    if spec.tpm_support:
        params["TpmSupport"] = spec.tpm_support
    if spec.description:
        params["Description"] = spec.description
    if spec.tags:
        params["TagSpecifications"] = [
            {"ResourceType": "image", "Tags": tag_list(spec.tags)},
            {"ResourceType": "snapshot", "Tags": tag_list(spec.tags)},
        ]
    return params


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Snapshot:
    id: str
    #: ``pending`` | ``completed`` | ``error`` | ``recoverable`` | ``recovering``
    state: str
    volume_id: str | None = None
    volume_gib: int = 0
    progress: str = ""
    state_message: str = ""
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Snapshot:
        return cls(
            id=data["SnapshotId"],
            state=data.get("State", "unknown"),
            volume_id=data.get("VolumeId") or None,
            volume_gib=int(data.get("VolumeSize") or 0),
            progress=data.get("Progress") or "",
            state_message=data.get("StateMessage") or "",
            tags=_tags(data),
        )


@dataclass(frozen=True)
class Image:
    id: str
    name: str
    #: ``pending`` | ``available`` | ``failed`` | ``error`` | ``invalid`` | ...
    state: str
    snapshot_ids: tuple[str, ...] = ()
    state_reason: str = ""
    architecture: str | None = None
    boot_mode: str | None = None
    ena_support: bool | None = None
    root_device_name: str | None = None
    public: bool = False
    tags: tuple[tuple[str, str], ...] = ()

    def tag(self, key: str) -> str | None:
        return dict(self.tags).get(key)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Image:
        mappings = data.get("BlockDeviceMappings") or []
        reason = data.get("StateReason") or {}
        return cls(
            id=data["ImageId"],
            name=data.get("Name") or "",
            state=data.get("State", "unknown"),
            snapshot_ids=tuple(
                m["Ebs"]["SnapshotId"] for m in mappings if (m.get("Ebs") or {}).get("SnapshotId")
            ),
            state_reason=reason.get("Message") or reason.get("Code") or "",
            architecture=data.get("Architecture"),
            boot_mode=data.get("BootMode"),
            ena_support=data.get("EnaSupport"),
            root_device_name=data.get("RootDeviceName"),
            public=bool(data.get("Public")),
            tags=_tags(data),
        )


def _tags(data: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple((t["Key"], t.get("Value", "")) for t in data.get("Tags") or [] if "Key" in t)


class SnapshotFailed(TaskFailed):
    """A snapshot ended ``error`` (exit 1)."""


class ImageFailed(TaskFailed):
    """An image (registered or copied) ended ``failed``/``error``/``invalid`` (exit 1)."""


# --------------------------------------------------------------------------- calls


def _code(exc: Exception) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def _call(ec2: Any, action: str, method: str, **params: Any) -> Any:
    try:
        return getattr(ec2, method)(**params)
    except botocore.exceptions.ClientError as exc:
        code = _code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")) or str(exc)
        if code.startswith("InvalidAMIName"):
            raise UsageError(f"{action}: EC2 refused the AMI name ({code}: {message})") from exc
        raise translate_error(exc, action=action) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise translate_error(exc, action=action) from exc


def first_available_zone(ec2: Any) -> str:
    """The region's first availability zone (by name) that is ``available``."""
    answer = _call(
        ec2,
        "DescribeAvailabilityZones",
        "describe_availability_zones",
        Filters=[{"Name": "state", "Values": ["available"]}],
    )
    zones = sorted(
        z["ZoneName"]
        for z in answer.get("AvailabilityZones") or []
        if z.get("ZoneType", "availability-zone") == "availability-zone"
    )
    if not zones:
        raise RemoteError(
            "the region has no available availability zone", fix="pass -z ZONE or another --region"
        )
    return zones[0]


@dataclass(frozen=True)
class Region:
    name: str
    #: ``opt-in-not-required`` | ``opted-in`` | ``not-opted-in``
    opt_in_status: str

    @property
    def enabled(self) -> bool:
        return self.opt_in_status != "not-opted-in"


def all_regions(ec2: Any) -> list[Region]:
    """Every region EC2 knows, enabled for the account or not (DescribeRegions AllRegions)."""
    answer = _call(ec2, "DescribeRegions", "describe_regions", AllRegions=True)
    return sorted(
        (
            Region(r["RegionName"], r.get("OptInStatus") or "opt-in-not-required")
            for r in answer.get("Regions") or []
        ),
        key=lambda r: r.name,
    )


def create_snapshot(
    ec2: Any, volume_id: str, *, description: str | None, tags: Sequence[tuple[str, str]]
) -> Snapshot:
    params: dict[str, Any] = {"VolumeId": volume_id}
    if description:
        params["Description"] = description
    if tags:
        params["TagSpecifications"] = [{"ResourceType": "snapshot", "Tags": tag_list(tags)}]
    return Snapshot.from_api(_call(ec2, "CreateSnapshot", "create_snapshot", **params))


def describe_snapshot(ec2: Any, snapshot_id: str) -> Snapshot | None:
    answer = _call_unless_gone(
        ec2, "DescribeSnapshots", "describe_snapshots", SnapshotIds=[snapshot_id]
    )
    found = [Snapshot.from_api(s) for s in (answer or {}).get("Snapshots") or []]
    return next((s for s in found if s.id == snapshot_id), None)


def snapshots_tagged(ec2: Any, key: str, value: str) -> list[Snapshot]:
    answer = _call(
        ec2,
        "DescribeSnapshots",
        "describe_snapshots",
        OwnerIds=["self"],
        Filters=[{"Name": f"tag:{key}", "Values": [value]}],
    )
    return [Snapshot.from_api(s) for s in answer.get("Snapshots") or []]


def register_image(ec2: Any, spec: ImageSpec) -> str:
    return str(
        _call(ec2, "RegisterImage", "register_image", **register_image_params(spec))["ImageId"]
    )


def describe_image(ec2: Any, image_id: str) -> Image | None:
    answer = _call_unless_gone(ec2, "DescribeImages", "describe_images", ImageIds=[image_id])
    found = [Image.from_api(i) for i in (answer or {}).get("Images") or []]
    return next((i for i in found if i.id == image_id), None)


def image_named(ec2: Any, name: str) -> Image | None:
    """This account's AMI called ``name`` in the client's region, if any (names are unique)."""
    answer = _call(
        ec2,
        "DescribeImages",
        "describe_images",
        Owners=["self"],
        Filters=[{"Name": "name", "Values": [name]}],
    )
    found = [Image.from_api(i) for i in answer.get("Images") or []]
    return next((i for i in found if i.name == name and i.state not in _IMAGE_FAILED[3:]), None)


def copy_image(
    ec2: Any,
    *,
    source_image_id: str,
    source_region: str,
    name: str,
    description: str | None,
    tags: Sequence[tuple[str, str]],
) -> str:
    """CopyImage called on ``ec2``, a client of the destination region; the new image's id."""
    params: dict[str, Any] = {
        "SourceImageId": source_image_id,
        "SourceRegion": source_region,
        "Name": name,
    }
    if description:
        params["Description"] = description
    if tags:
        params["TagSpecifications"] = [
            {"ResourceType": "image", "Tags": tag_list(tags)},
            {"ResourceType": "snapshot", "Tags": tag_list(tags)},
        ]
    return str(_call(ec2, "CopyImage", "copy_image", **params)["ImageId"])


def grant_launch(ec2: Any, image: Image, *, public: bool, accounts: Sequence[str]) -> None:
    """Launch permission on the image and createVolumePermission on its snapshots."""
    if not public and not accounts:
        return
    permissions: list[dict[str, str]] = [{"Group": "all"}] if public else []
    permissions += [{"UserId": account} for account in accounts]
    _call(
        ec2,
        "ModifyImageAttribute",
        "modify_image_attribute",
        ImageId=image.id,
        LaunchPermission={"Add": permissions},
    )
    for snapshot_id in image.snapshot_ids:
        params: dict[str, Any] = {
            "SnapshotId": snapshot_id,
            "Attribute": "createVolumePermission",
            "OperationType": "add",
        }
        if public:
            params["GroupNames"] = ["all"]
        if accounts:
            params["UserIds"] = list(accounts)
        _call(ec2, "ModifySnapshotAttribute", "modify_snapshot_attribute", **params)


def create_tags(ec2: Any, resource_ids: Sequence[str], tags: Sequence[tuple[str, str]]) -> None:
    if resource_ids and tags:
        _call(ec2, "CreateTags", "create_tags", Resources=list(resource_ids), Tags=tag_list(tags))


def _call_unless_gone(ec2: Any, action: str, method: str, **params: Any) -> Any | None:
    """The call's answer; None when EC2 says the resource does not exist (or no longer)."""
    try:
        return getattr(ec2, method)(**params)
    except botocore.exceptions.ClientError as exc:
        if _code(exc) in _NOT_FOUND:
            return None
        raise translate_error(exc, action=action) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise translate_error(exc, action=action) from exc


def _delete(ec2: Any, action: str, method: str, **params: Any) -> bool:
    """True when deleted, False when it was already gone."""
    return _call_unless_gone(ec2, action, method, **params) is not None


def delete_volume(ec2: Any, volume_id: str) -> bool:
    return _delete(ec2, "DeleteVolume", "delete_volume", VolumeId=volume_id)


def delete_snapshot(ec2: Any, snapshot_id: str) -> bool:
    return _delete(ec2, "DeleteSnapshot", "delete_snapshot", SnapshotId=snapshot_id)


def deregister_image(ec2: Any, image_id: str) -> bool:
    return _delete(ec2, "DeregisterImage", "deregister_image", ImageId=image_id)


# --------------------------------------------------------------------------- waiting


def _poll(
    describe: Callable[[], Any | None],
    what: str,
    settings: WaitSettings,
    done: Callable[[Any], bool],
    on_update: Callable[[Any], None] | None,
) -> Any:
    started = settings.clock()
    last_state: str | None = None
    while True:
        now = settings.clock()
        item = describe()
        if item is None:
            if now - started >= settings.visibility_grace:
                raise RemoteError(f"{what} does not exist", fix="check the id and --region")
        else:
            if item.state != last_state:
                last_state = item.state
                if on_update is not None:
                    on_update(item)
            if done(item):
                return item
        if settings.timeout is not None and now - started >= settings.timeout:
            raise TaskFailed(
                f"{what} is still {last_state or 'not visible'} after {int(settings.timeout)} s",
                fix="run the same command again later: it continues from here",
            )
        settings.sleep(settings.interval)


def wait_snapshot(
    ec2: Any,
    snapshot_id: str,
    *,
    settings: WaitSettings,
    on_update: Callable[[Snapshot], None] | None = None,
) -> Snapshot:
    """Poll until ``completed``; SnapshotFailed when it ends ``error``."""
    snapshot: Snapshot = _poll(
        lambda: describe_snapshot(ec2, snapshot_id),
        f"snapshot {snapshot_id}",
        settings,
        lambda s: s.state in ("completed", "error"),
        on_update,
    )
    if snapshot.state == "error":
        raise SnapshotFailed(
            f"snapshot {snapshot_id} ended in error"
            + (f": {snapshot.state_message}" if snapshot.state_message else "")
        )
    return snapshot


def wait_image(
    ec2: Any,
    image_id: str,
    *,
    settings: WaitSettings,
    region: str = "",
    on_update: Callable[[Image], None] | None = None,
) -> Image:
    """Poll until ``available``; ImageFailed when it ends failed/error/invalid."""
    where = f" in {region}" if region else ""
    image: Image = _poll(
        lambda: describe_image(ec2, image_id),
        f"image {image_id}{where}",
        settings,
        lambda i: i.state == "available" or i.state in _IMAGE_FAILED,
        on_update,
    )
    if image.state != "available":
        raise ImageFailed(
            f"image {image_id}{where} ended {image.state}"
            + (f": {image.state_reason}" if image.state_reason else "")
        )
    return image
