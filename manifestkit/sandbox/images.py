"""The sandbox's AMI calls: CreateSnapshot, RegisterImage and CopyImage as EC2 does them.

moto 5.2.1 (pinned) serves the rest of the AMI chain itself — DescribeSnapshots, DescribeImages,
ModifyImageAttribute (launch permissions), ModifySnapshotAttribute / DescribeSnapshotAttribute
(``OperationType`` + ``GroupNames``/``UserIds``), DescribeImageAttribute, DeleteVolume,
DeleteSnapshot, DeregisterImage, DescribeRegions, DescribeAvailabilityZones, CreateTags — but
three calls do not behave as EC2 does, and waiting code could not be tested against them:

- CreateSnapshot's snapshot is ``completed`` at once (EC2: ``pending``, then ``completed`` or
  ``error``);
- RegisterImage keeps only the name and description: no block device mapping (it invents a 15 GiB
  volume and its own snapshot instead), no architecture, boot mode, ENA, TPM or IMDS setting, and
  accepts a name already taken (EC2: ``InvalidAMIName.Duplicate``);
- CopyImage copies none of that either, and the copy is ``available`` at once, with no snapshot
  of its own in the target region.

So those three are answered here, on moto's backend objects, so every moto Describe* call shows
what they made. Images and snapshots start ``pending`` and settle after a pause in the background.

Sandbox knobs (not EC2's), read at each call from the sandbox process's environment:
``MANIFESTKIT_SANDBOX_SNAPSHOT_DELAY`` / ``MANIFESTKIT_SANDBOX_IMAGE_DELAY`` (real seconds a new
snapshot / image stays ``pending``; default 0.5), ``MANIFESTKIT_SANDBOX_FAIL_SNAPSHOT=1`` (new
snapshots end ``error``), ``MANIFESTKIT_SANDBOX_FAIL_COPY=REGION[,REGION]`` (copies into those
regions end ``error``), and ``MANIFESTKIT_SANDBOX_DENY=Action[,Action]`` (those actions answer
``UnauthorizedOperation``, as for credentials whose policy lacks them).
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree as ET

from manifestkit.sandbox.import_requests import Ec2ApiError, dry_run_error, is_dry_run

log = logging.getLogger(__name__)

#: the actions this module answers; the others in ``DENIABLE`` only go through the deny knob
ACTIONS = frozenset({"CreateSnapshot", "RegisterImage", "CopyImage"})
DENIABLE = ACTIONS | frozenset(
    {
        "ModifyImageAttribute",
        "ModifySnapshotAttribute",
        "DeleteVolume",
        "DeleteSnapshot",
        "DeregisterImage",
        "CreateTags",
    }
)

ENV_SNAPSHOT_DELAY = "MANIFESTKIT_SANDBOX_SNAPSHOT_DELAY"
ENV_IMAGE_DELAY = "MANIFESTKIT_SANDBOX_IMAGE_DELAY"
ENV_FAIL_SNAPSHOT = "MANIFESTKIT_SANDBOX_FAIL_SNAPSHOT"
ENV_FAIL_COPY = "MANIFESTKIT_SANDBOX_FAIL_COPY"
ENV_DENY = "MANIFESTKIT_SANDBOX_DENY"

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
Response = tuple[int, list[tuple[str, str]], bytes]

# EC2 API Reference, RegisterImage: "Constraints: 3-128 alphanumeric characters, parentheses (()),
# square brackets ([]), spaces ( ), periods (.), slashes (/), dashes (-), single quotes ('),
# at-signs (@), or underscores(_)"
AMI_NAME = re.compile(r"[A-Za-z0-9()\[\] ./\-'@_]{3,128}")
ARCHITECTURES = frozenset({"i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"})
BOOT_MODES = frozenset({"legacy-bios", "uefi", "uefi-preferred"})
VOLUME_TYPES = frozenset({"standard", "io1", "io2", "gp2", "sc1", "st1", "gp3"})


@dataclass(frozen=True)
class ImageSettings:
    """Sandbox knobs for the AMI chain (see the module docstring)."""

    snapshot_delay: float = 0.5
    image_delay: float = 0.5
    fail_snapshot: bool = False
    fail_copy_regions: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ImageSettings:
        env = os.environ if env is None else env

        def seconds(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            return max(0.0, float(raw)) if raw else default

        def names(name: str) -> frozenset[str]:
            return frozenset(p.strip() for p in env.get(name, "").split(",") if p.strip())

        return cls(
            snapshot_delay=seconds(ENV_SNAPSHOT_DELAY, cls.snapshot_delay),
            image_delay=seconds(ENV_IMAGE_DELAY, cls.image_delay),
            fail_snapshot=env.get(ENV_FAIL_SNAPSHOT, "").strip() not in ("", "0"),
            fail_copy_regions=names(ENV_FAIL_COPY),
            deny=names(ENV_DENY),
        )


# --------------------------------------------------------------------------- moto objects


def _ami_class() -> type:
    """moto's Ami, without the volume and snapshot its constructor invents (imported lazily: the
    sandbox loads moto's EC2 only when an EC2 call comes)."""
    from moto.ec2.models.amis import Ami

    class RegisteredAmi(Ami):  # type: ignore[misc]
        """An image as RegisterImage / CopyImage made it: what it was given, nothing else."""

        def __init__(self, backend: Any, ami_id: str, fields: dict[str, Any]) -> None:
            from moto.core.utils import utcnow

            self.ec2_backend = backend
            self.id = ami_id
            self.state = "pending"
            self.image_type = "machine"
            self.image_location = f"{backend.account_id}/{fields['name']}"
            self.owner_id = backend.account_id
            self.owner_alias = None
            self.kernel_id = None
            self.platform = None
            self.hypervisor = "xen"
            self.root_device_type = "ebs"
            self.creation_date = utcnow()
            self.product_codes: set[str] = set()
            self.instance_id = None
            self.launch_permissions: list[dict[str, str]] = []
            self.name = fields["name"]
            self.description = fields.get("description")
            self.architecture = fields.get("architecture") or "x86_64"
            self.virtualization_type = fields.get("virtualization_type") or "hvm"
            self.root_device_name = fields["root_device_name"]
            self.boot_mode = fields.get("boot_mode")
            self.ena_support = fields.get("ena_support")
            # DescribeImages reads sriov_net_support, DescribeImageAttribute moto's ``sriov``
            self.sriov = self.sriov_net_support = fields.get("sriov_net_support")
            # DescribeImageAttribute reads ``tmp`` and ``imds`` (moto's names)
            self.tmp = self.tpm_support = fields.get("tpm_support")
            self.imds = self.imds_support = fields.get("imds_support")
            self._mappings: list[dict[str, Any]] = fields["block_device_mappings"]
            self.state_reason: dict[str, str] | None = None

        @property
        def block_device_mappings(self) -> list[dict[str, Any]]:
            return self._mappings

        @property
        def snapshot_ids(self) -> list[str]:
            return [m["Ebs"]["SnapshotId"] for m in self._mappings if "Ebs" in m]

    return RegisteredAmi


def _moto(fn: Callable[[], Any]) -> Any:
    """Run a backend call; moto's EC2 exceptions carry EC2's own codes."""
    from moto.core.exceptions import ServiceException

    try:
        return fn()
    except ServiceException as exc:
        raise Ec2ApiError(str(exc.code), str(exc.message)) from exc


# --------------------------------------------------------------------------- request parsing


def _indexed(params: Mapping[str, str], prefix: str) -> list[dict[str, str]]:
    """``Prefix.N.Rest=value`` -> ``[{Rest: value}, ...]`` in N order."""
    found: dict[int, dict[str, str]] = {}
    for name, value in params.items():
        if not name.startswith(prefix + "."):
            continue
        index, _, rest = name[len(prefix) + 1 :].partition(".")
        if index.isdigit() and rest:
            found.setdefault(int(index), {})[rest] = value
    return [found[i] for i in sorted(found)]


def _tags_for(params: Mapping[str, str], resource_type: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in _indexed(params, "TagSpecification"):
        if spec.get("ResourceType") != resource_type:
            continue
        for tag in _indexed(spec, "Tag"):
            if "Key" in tag:
                tags[tag["Key"]] = tag.get("Value", "")
    return tags


def _check_tag_targets(params: Mapping[str, str], allowed: set[str]) -> None:
    for spec in _indexed(params, "TagSpecification"):
        kind = spec.get("ResourceType", "")
        if kind not in allowed:
            raise Ec2ApiError(
                "InvalidParameterValue", f"'{kind}' is not a valid taggable resource type here"
            )


def _required(params: Mapping[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise Ec2ApiError("MissingParameter", f"The request must contain the parameter {name}")
    return value


def _flag(params: Mapping[str, str], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    return raw.strip().lower() in ("true", "1")


def _check_name(name: str) -> None:
    if not AMI_NAME.fullmatch(name):
        raise Ec2ApiError(
            "InvalidAMIName.Malformed",
            "AMI names must be between 3 and 128 characters long, and may contain letters, "
            "numbers, '(', ')', '.', '-', '/' and '_'",
        )


def _check_name_free(backend: Any, name: str) -> None:
    for image in backend.amis.values():
        if image.name == name and image.owner_id == backend.account_id:
            raise Ec2ApiError(
                "InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {image.id}"
            )


def _choice(params: Mapping[str, str], name: str, allowed: frozenset[str]) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if value not in allowed:
        raise Ec2ApiError(
            "InvalidParameterValue", f"Value ({value}) for parameter {name} is invalid."
        )
    return value


# --------------------------------------------------------------------------- the endpoint


class ImageEndpoint:
    """The three calls for one sandbox; settling happens on the sandbox's thread pool."""

    def __init__(
        self,
        *,
        ec2_backend: Callable[[str, str], Any],
        submit: Callable[[Callable[[], None]], object],
        stopping: threading.Event,
        settings: Callable[[], ImageSettings] = ImageSettings.from_env,
    ) -> None:
        self.ec2_backend = ec2_backend
        self.submit = submit
        self.stopping = stopping
        self.settings = settings
        self.lock = threading.RLock()

    def handle_params(
        self, params: Mapping[str, str], region: str, account_id: str
    ) -> Response | None:
        action = params.get("Action", "")
        request_id = str(uuid.uuid4())
        try:
            settings = self.settings()
            if action in settings.deny:
                raise Ec2ApiError(
                    "UnauthorizedOperation",
                    f"You are not authorized to perform this operation. (ec2:{action} denied by "
                    f"{ENV_DENY})",
                    403,
                )
            if action not in ACTIONS:
                return None
            backend = self.ec2_backend(region, account_id)
            if action == "CreateSnapshot":
                body = self._create_snapshot(params, backend, settings)
            elif action == "RegisterImage":
                body = self._register_image(params, backend, settings)
            else:
                body = self._copy_image(params, backend, account_id, settings)
        except Ec2ApiError as error:
            return _error(error, request_id)
        except ValueError as exc:  # a bad MANIFESTKIT_SANDBOX_* value
            return _error(
                Ec2ApiError("InternalError", f"sandbox misconfigured: {exc}", 500), request_id
            )
        request = ET.Element("requestId")
        request.text = request_id
        body.insert(0, request)
        return (
            200,
            [("Content-Type", "text/xml;charset=UTF-8")],
            ET.tostring(body, encoding="utf-8", xml_declaration=True),
        )

    # -- CreateSnapshot ---------------------------------------------------------------------

    def _create_snapshot(
        self, params: Mapping[str, str], backend: Any, settings: ImageSettings
    ) -> ET.Element:
        volume_id = _required(params, "VolumeId")
        _check_tag_targets(params, {"snapshot"})
        volume = _moto(lambda: backend.get_volume(volume_id))
        if is_dry_run(params):
            raise dry_run_error()
        with self.lock:
            snapshot = _moto(
                lambda: backend.create_snapshot(volume_id, params.get("Description", ""))
            )
            snapshot.status = "pending"
            snapshot.add_tags(_tags_for(params, "snapshot"))
        final = "error" if settings.fail_snapshot else "completed"
        self._later(settings.snapshot_delay, lambda: setattr(snapshot, "status", final))
        root = ET.Element("CreateSnapshotResponse", xmlns=XMLNS)
        _sub(root, "snapshotId", snapshot.id)
        _sub(root, "volumeId", volume.id)
        _sub(root, "status", "pending")
        _sub(root, "startTime", snapshot.start_time.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
        _sub(root, "progress", "0%")
        _sub(root, "ownerId", snapshot.owner_id)
        _sub(root, "volumeSize", volume.size)
        _sub(root, "description", snapshot.description)
        _sub(root, "encrypted", "false")
        tags = snapshot.get_tags()
        if tags:
            tag_set = _sub(root, "tagSet")
            for tag in tags:
                item = _sub(tag_set, "item")
                _sub(item, "key", tag["key"])
                _sub(item, "value", tag["value"])
        return root

    # -- RegisterImage ----------------------------------------------------------------------

    def _register_image(
        self, params: Mapping[str, str], backend: Any, settings: ImageSettings
    ) -> ET.Element:
        name = _required(params, "Name")
        _check_name(name)
        if params.get("ImageLocation"):
            raise Ec2ApiError(
                "InvalidParameterValue", "the sandbox registers EBS-backed images only"
            )
        _check_tag_targets(params, {"image", "snapshot"})
        architecture = _choice(params, "Architecture", ARCHITECTURES)
        boot_mode = _choice(params, "BootMode", BOOT_MODES)
        virtualization = _choice(params, "VirtualizationType", frozenset({"hvm", "paravirtual"}))
        tpm = _choice(params, "TpmSupport", frozenset({"v2.0"}))
        imds = _choice(params, "ImdsSupport", frozenset({"v2.0"}))
        sriov = _choice(params, "SriovNetSupport", frozenset({"simple"}))
        if tpm and boot_mode != "uefi":
            raise Ec2ApiError(
                "InvalidParameterCombination", "TpmSupport v2.0 requires BootMode uefi"
            )
        root_device = params.get("RootDeviceName") or "/dev/sda1"
        mappings = self._mappings(params, backend)
        if not any(m["DeviceName"] == root_device for m in mappings):
            raise Ec2ApiError(
                "InvalidBlockDeviceMapping",
                f"The root device name {root_device} has no block device mapping",
            )
        if is_dry_run(params):
            raise dry_run_error()
        with self.lock:
            _check_name_free(backend, name)
            from moto.ec2.utils import random_ami_id

            image = _ami_class()(
                backend,
                random_ami_id(),
                {
                    "name": name,
                    "description": params.get("Description"),
                    "architecture": architecture,
                    "virtualization_type": virtualization,
                    "root_device_name": root_device,
                    "boot_mode": boot_mode,
                    "ena_support": _flag(params, "EnaSupport"),
                    "sriov_net_support": sriov,
                    "tpm_support": tpm,
                    "imds_support": imds,
                    "block_device_mappings": mappings,
                },
            )
            image.add_tags(_tags_for(params, "image"))
            backend.amis[image.id] = image
        for snapshot_id in image.snapshot_ids:
            snapshot = backend.snapshots[snapshot_id]
            snapshot.add_tags(_tags_for(params, "snapshot"))
        self._later(settings.image_delay, lambda: setattr(image, "state", "available"))
        root = ET.Element("RegisterImageResponse", xmlns=XMLNS)
        _sub(root, "imageId", image.id)
        return root

    @staticmethod
    def _mappings(params: Mapping[str, str], backend: Any) -> list[dict[str, Any]]:
        mappings: list[dict[str, Any]] = []
        for raw in _indexed(params, "BlockDeviceMapping"):
            device = raw.get("DeviceName")
            if not device:
                raise Ec2ApiError("MissingParameter", "BlockDeviceMapping needs a DeviceName")
            snapshot_id = raw.get("Ebs.SnapshotId")
            if not snapshot_id:
                raise Ec2ApiError(
                    "InvalidBlockDeviceMapping", f"{device}: the sandbox needs Ebs.SnapshotId"
                )
            snapshot = _moto(lambda s=snapshot_id: backend.get_snapshot(s))
            if snapshot.status != "completed":
                raise Ec2ApiError("IncorrectState", f"Snapshot '{snapshot_id}' is not 'completed'.")
            size = int(raw.get("Ebs.VolumeSize") or snapshot.volume_size)
            if size < snapshot.volume_size:
                raise Ec2ApiError(
                    "InvalidBlockDeviceMapping",
                    f"Volume of size {size}GB is smaller than snapshot '{snapshot_id}', expect "
                    f"size >= {snapshot.volume_size}GB",
                )
            volume_type = _choice(raw, "Ebs.VolumeType", VOLUME_TYPES) or "standard"
            delete = _flag(raw, "Ebs.DeleteOnTermination")
            mappings.append(
                {
                    "DeviceName": device,
                    "Ebs": {
                        "SnapshotId": snapshot_id,
                        "VolumeSize": size,
                        "VolumeType": volume_type,
                        "DeleteOnTermination": True if delete is None else delete,
                        "Encrypted": False,
                    },
                }
            )
        if not mappings:
            raise Ec2ApiError("InvalidBlockDeviceMapping", "An EBS-backed image needs a mapping")
        return mappings

    # -- CopyImage --------------------------------------------------------------------------

    def _copy_image(
        self, params: Mapping[str, str], backend: Any, account_id: str, settings: ImageSettings
    ) -> ET.Element:
        source_id = _required(params, "SourceImageId")
        source_region = _required(params, "SourceRegion")
        try:
            source_backend = self.ec2_backend(source_region, account_id)
        except KeyError:
            raise Ec2ApiError(
                "InvalidRegion", f"The source region {source_region} does not exist"
            ) from None
        source = source_backend.amis.get(source_id)
        if source is None or not hasattr(source, "snapshot_ids"):
            raise Ec2ApiError(
                "InvalidAMIID.NotFound", f"The image id '[{source_id}]' does not exist"
            )
        if source.state != "available":
            raise Ec2ApiError("IncorrectState", f"Image {source_id} is not available")
        name = params.get("Name") or source.name
        _check_name(name)
        _check_tag_targets(params, {"image", "snapshot"})
        if is_dry_run(params):
            raise dry_run_error()
        region = backend.region_name
        with self.lock:
            _check_name_free(backend, name)
            mappings = []
            new_snapshots = []
            for mapping in source.block_device_mappings:
                source_snapshot = source_backend.snapshots[mapping["Ebs"]["SnapshotId"]]
                zone = backend.describe_availability_zones()[0].name
                volume = backend.create_volume(size=source_snapshot.volume_size, zone_name=zone)
                snapshot = backend.create_snapshot(
                    volume.id,
                    f"Copied for DestinationAmi from SourceAmi {source_id} ({source_region})",
                )
                backend.delete_volume(volume.id)
                snapshot.status = "pending"
                snapshot.add_tags(_tags_for(params, "snapshot"))
                new_snapshots.append(snapshot)
                mappings.append({**mapping, "Ebs": {**mapping["Ebs"], "SnapshotId": snapshot.id}})
            from moto.ec2.utils import random_ami_id

            image = _ami_class()(
                backend,
                random_ami_id(),
                {
                    "name": name,
                    "description": params.get("Description") or source.description,
                    "architecture": source.architecture,
                    "virtualization_type": source.virtualization_type,
                    "root_device_name": source.root_device_name,
                    "boot_mode": source.boot_mode,
                    "ena_support": source.ena_support,
                    "sriov_net_support": source.sriov_net_support,
                    "tpm_support": source.tpm_support,
                    "imds_support": source.imds_support,
                    "block_device_mappings": mappings,
                },
            )
            image.add_tags(_tags_for(params, "image"))
            backend.amis[image.id] = image
        failed = region in settings.fail_copy_regions

        def settle() -> None:
            for snapshot in new_snapshots:
                snapshot.status = "error" if failed else "completed"
            if failed:
                image.state = "error"
                image.state_reason = {
                    "Code": "Client.UserInitiated",
                    "Message": f"copy failed ({ENV_FAIL_COPY})",
                }
            else:
                image.state = "available"

        self._later(settings.image_delay, settle)
        root = ET.Element("CopyImageResponse", xmlns=XMLNS)
        _sub(root, "imageId", image.id)
        return root

    # -- settling ---------------------------------------------------------------------------

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        def run() -> None:
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if self.stopping.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
                    return
            with self.lock:
                action()

        self.submit(run)


def _sub(parent: ET.Element, tag: str, text: object = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def _error(error: Ec2ApiError, request_id: str) -> Response:
    root = ET.Element("Response")
    item = _sub(_sub(root, "Errors"), "Error")
    _sub(item, "Code", error.code)
    _sub(item, "Message", error.message)
    _sub(root, "RequestID", request_id)
    body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return error.status, [("Content-Type", "text/xml;charset=UTF-8")], body


# -- the hook the sandbox middleware calls --------------------------------------------------------

_STATE_KEY = "manifestkit.sandbox.images"
ENV_PARAMS = "manifestkit.sandbox.params"


def endpoint_for(context: Any) -> ImageEndpoint:
    endpoint: ImageEndpoint = context.shared(
        _STATE_KEY,
        lambda: ImageEndpoint(
            ec2_backend=lambda region, account: context.ec2_backend(region, account),
            submit=context.submit,
            stopping=context.stopping,
        ),
    )
    return endpoint


def handle(environ: dict[str, Any], context: Any) -> Response | None:
    """The hook ``SandboxApp`` calls for ``DENIABLE`` actions, after the SigV4 check; None lets
    moto answer."""
    params = dict(environ.get(ENV_PARAMS) or {})
    if params.get("Action") not in DENIABLE:
        return None
    return endpoint_for(context).handle_params(params, *context.signed_for(environ))
