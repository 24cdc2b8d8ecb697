"""``import_ami``: image -> upload -> ImportVolume -> snapshot -> RegisterImage -> copies, sharing.

The manifest route for every OS that is not Windows (ImportInstance documents only ``Windows``):
the FreeBSD/OpenBSD AMI builders' chain, in one call that can be stopped anywhere and continued.

Steps (``ami_journal.STEPS``): upload (as ``upload_image``), ImportVolume into the zone and wait,
CreateSnapshot of the imported volume and wait for ``completed``, RegisterImage (hvm, the snapshot
as the root device) and wait for ``available``, CopyImage into each ``copy_to`` region at once and
wait for all, launch permission (and the snapshots' createVolumePermission) for ``public`` /
``share_with`` in every region, then delete the imported volume and (unless ``keep_upload``) the
uploaded parts and manifest.

Nothing is done twice. The journal records each step and id as it happens; before each creating
call the run also looks for what a run killed between the call and the journal write left (the
conversion task reading this manifest; a snapshot, image or copy tagged with the run's
``manifestkit:run`` tag) and adopts it. A name already taken by an AMI this run did not make is
refused before anything is uploaded.

Nothing is left behind by a failure: unless ``keep_on_failure``, what this run created and no
longer needs (the volume, a snapshot no AMI uses, an image or copy that failed, the upload) is
removed, and the error says what was removed and what was kept. Ctrl-C removes nothing: running
the same call again continues.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any

from manifestkit import ec2, ec2_images
from manifestkit.aws import AwsSettings, client_config, ec2_client, make_session, region_of
from manifestkit.ec2 import DiskImageSpec, VolumeImportSpec, WaitSettings
from manifestkit.ec2_images import (
    ARCHITECTURES,
    DEFAULT_ROOT_DEVICE,
    DEFAULT_VOLUME_TYPE,
    RUN_TAG,
    Image,
    ImageSpec,
    check_account_id,
    check_ami_name,
    check_register_options,
)
from manifestkit.errors import ManifestkitError, RemoteError, UsageError
from manifestkit.progress import NoProgress, Progress
from manifestkit.workflow.ami_journal import CopyRecord, Journal, new_journal, open_journal
from manifestkit.workflow.import_ import ConversionTaskFailed
from manifestkit.workflow.upload import UploadRequest, upload_image
from manifestkit.workflow.upload_state import find_state

log = logging.getLogger("manifestkit")

__all__ = ["AmiRequest", "AmiResult", "RegionImage", "checkpoint_from_env", "import_ami"]

#: ``STEP:ACTION`` (ACTION ``kill`` = SIGKILL, ``interrupt`` = Ctrl-C, ``fail`` = a remote
#: failure) stops a run at a named checkpoint: how the tests stop it at every step boundary
ENV_STOP = "MANIFESTKIT_AMI_TEST_STOP"
#: the checkpoints, in order: before each step, and between a creating call and its journal entry
CHECKPOINTS = (
    "upload",
    "upload-done",
    "import",
    "import-called",
    "snapshot",
    "snapshot-called",
    "register",
    "register-called",
    "copy",
    "copy-called",
    "share",
    "cleanup",
)


@dataclass(frozen=True)
class AmiRequest:
    """One image made into an AMI; the RegisterImage fields are named as ``register-image``'s."""

    upload: UploadRequest
    name: str
    #: ImportVolume's zone; None: the region's first available zone
    availability_zone: str | None = None
    architecture: str = "x86_64"
    boot_mode: str | None = None
    ena_support: bool = False
    sriov_net_support: str | None = None
    root_device_name: str = DEFAULT_ROOT_DEVICE
    volume_type: str = DEFAULT_VOLUME_TYPE
    #: the AMI's root volume (GiB); None: the imported volume's size, at least the snapshot's
    volume_gib: int | None = None
    imds_support: str | None = None
    tpm_support: str | None = None
    description: str | None = None
    #: applied to the AMI, its snapshots and (while it lives) the imported volume
    tags: tuple[tuple[str, str], ...] = ()
    #: regions to copy the AMI into; ``("all",)``: every other region enabled for the account
    copy_to: tuple[str, ...] = ()
    public: bool = False
    share_with: tuple[str, ...] = ()
    keep_upload: bool = False
    keep_on_failure: bool = False
    #: keep a journal file (False: in memory only, e.g. with ``--local``)
    record_journal: bool = True

    def __post_init__(self) -> None:
        check_ami_name(self.name)
        check_register_options(
            architecture=self.architecture,
            boot_mode=self.boot_mode,
            tpm_support=self.tpm_support,
            volume_type=self.volume_type,
        )
        for account in self.share_with:
            check_account_id(account)
        for key, _ in self.tags:
            if not key or key.lower().startswith("aws:") or key == RUN_TAG:
                raise UsageError(
                    f"--tag {key!r}: EC2 reserves 'aws:' keys and manifestkit sets {RUN_TAG}",
                    fix="use another key",
                )
        if "all" in self.copy_to and len(self.copy_to) > 1:
            raise UsageError("--copy-to all goes alone", fix="give 'all' or a list of regions")
        if self.upload.volume_gib is not None:
            raise UsageError(
                "the imported volume's size follows the image",
                fix="give the AMI's size with volume_gib (--volume-size)",
            )


@dataclass(frozen=True)
class RegionImage:
    region: str
    image_id: str
    snapshot_ids: tuple[str, ...]
    public: bool
    shared_with: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "snapshot_ids": list(self.snapshot_ids),
            "public": self.public,
            "shared_with": list(self.shared_with),
        }


@dataclass(frozen=True)
class AmiResult:
    """Every id one run created; ``to_dict`` is the ``--output json`` document."""

    name: str
    run_id: str
    region: str
    image_id: str
    snapshot_id: str
    import_task_id: str | None
    availability_zone: str | None
    #: the imported volume (deleted at the end: ``volume_deleted``)
    volume_id: str | None
    volume_deleted: bool
    #: ``s3://bucket/key`` of the manifest; the parts and it are gone when ``upload_deleted``
    upload: str | None
    upload_deleted: bool
    #: the AMI in the home region first, then its copies
    images: tuple[RegionImage, ...]
    journal: str | None
    #: True when this call continued an earlier, stopped run
    continued: bool

    @property
    def copies(self) -> tuple[RegionImage, ...]:
        return self.images[1:]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "run_id": self.run_id,
            "region": self.region,
            "image_id": self.image_id,
            "snapshot_id": self.snapshot_id,
            "regions": {image.region: image.to_dict() for image in self.images},
            "import_task_id": self.import_task_id,
            "availability_zone": self.availability_zone,
            "volume_id": self.volume_id,
            "volume_deleted": self.volume_deleted,
            "upload": self.upload,
            "upload_deleted": self.upload_deleted,
            "journal": self.journal,
            "continued": self.continued,
        }


def checkpoint_from_env(environ: dict[str, str] | None = None) -> Callable[[str], None]:
    """The test hook of ``ENV_STOP``: a checkpoint that stops the run at the named step."""
    raw = (os.environ if environ is None else environ).get(ENV_STOP, "")
    if not raw:
        return lambda step: None
    where, _, action = raw.partition(":")
    if where not in CHECKPOINTS or action not in ("kill", "interrupt", "fail"):
        raise UsageError(
            f"{ENV_STOP}={raw!r} is not STEP:kill|interrupt|fail",
            fix=f"STEP is one of {', '.join(CHECKPOINTS)}",
        )

    def stop(step: str) -> None:
        if step != where:
            return
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "interrupt":
            raise KeyboardInterrupt
        raise RemoteError(f"forced failure at {step} ({ENV_STOP})")

    return stop


class _Stopped(Exception):
    """A concurrent wait told to stop (the run was interrupted or another copy failed)."""


class _AmiRun:
    def __init__(
        self,
        request: AmiRequest,
        settings: AwsSettings,
        wait: WaitSettings,
        progress: Progress,
        notify: Callable[[str], None],
        checkpoint: Callable[[str], None],
    ) -> None:
        self.request = request
        self.settings = settings
        self.wait = wait
        self.progress = progress
        self.notify = notify
        self.checkpoint = checkpoint
        self.session = make_session(settings)
        self.region = region_of(self.session)
        self.ec2 = ec2_client(self.session, settings)
        self.journal: Journal = open_journal(
            request.upload.image,
            request.name,
            self.region,
            request.upload.state_dir,
            record=request.record_journal,
        )
        self.copy_regions: list[str] = []
        self._clients: dict[str, Any] = {self.region: self.ec2}
        if self.journal.record.step == "done" and self._finished_image_gone():
            # the AMI of a finished run was deregistered since: this is a new run
            self.journal.record = new_journal(request.upload.image, request.name, self.region)
            self.journal.update()
            self.journal.continued = False

    def _finished_image_gone(self) -> bool:
        image_id = self.journal.record.image_id
        return image_id is None or ec2_images.describe_image(self.ec2, image_id) is None

    # ------------------------------------------------------------------ helpers

    @property
    def j(self):  # noqa: ANN201 - the journal's current record
        return self.journal.record

    @property
    def tags(self) -> list[tuple[str, str]]:
        return [(RUN_TAG, self.j.run_id), *self.request.tags]

    def client(self, region: str) -> Any:
        if region not in self._clients:
            self._clients[region] = self.session.client(
                "ec2",
                region_name=region,
                endpoint_url=self.settings.ec2_endpoint_url,
                config=client_config(self.settings),
            )
        return self._clients[region]

    def ours(self, image: Image | None) -> bool:
        return image is not None and image.tag(RUN_TAG) == self.j.run_id

    # ------------------------------------------------------------------ before anything

    def check_inputs(self) -> None:
        """Bad input found before a byte is uploaded: a taken name, an unknown region."""
        self._check_image()
        self._check_architecture()
        taken = ec2_images.image_named(self.ec2, self.request.name)
        if taken is not None and taken.id != self.j.image_id and not self.ours(taken):
            raise _name_taken(self.request.name, self.region, taken)
        self.copy_regions = self._resolve_regions()
        for region in self.copy_regions:
            taken = ec2_images.image_named(self.client(region), self.request.name)
            if (
                taken is not None
                and taken.id != self.j.copy_for(region).image_id
                and not self.ours(taken)
            ):
                raise _name_taken(self.request.name, region, taken)

    def _check_image(self) -> None:
        """An image EC2 cannot import is refused before a bucket is made or a byte is sent
        (the upload itself checks again, after creating the bucket)."""
        upload = self.request.upload
        if upload.convert or upload.dont_verify_format or self.j.manifest_url or self.j.task_id:
            return
        from manifestkit.errors import NotImportableError
        from manifestkit.images import inspect_image

        info = inspect_image(upload.image, format=upload.format)
        if not info.importable:
            raise NotImportableError(
                f"{upload.image}: EC2 cannot import this image: {' '.join(info.problems)}",
                fix="pass --convert to upload a converted copy, or convert it yourself "
                "(manifestkit convert)",
            )
        wanted = self.request.volume_gib
        if wanted is not None and wanted < info.volume_gib:
            # the snapshot will be the imported volume's size: the AMI's root cannot be smaller
            raise UsageError(
                f"--volume-size {wanted} GiB is smaller than the volume {upload.image} is "
                f"imported into ({info.volume_gib} GiB)",
                fix=f"give at least {info.volume_gib}, or leave --volume-size out",
            )

    def _check_architecture(self) -> None:
        """Refuse an architecture the image says it is not (its GPT's DPS partition types);
        an image that says nothing is taken at the user's word."""
        from manifestkit.images.architecture import image_architectures

        image = self.request.upload.image
        declared = image_architectures(image)
        if declared and self.request.architecture not in declared:
            names = " and ".join(sorted(declared))
            usable = sorted(declared & set(ARCHITECTURES))
            raise UsageError(
                f"{image}: its partition table declares {names} (Discoverable "
                f"Partitions Specification partition types), not {self.request.architecture}",
                fix=f"pass --architecture {usable[0]}"
                if usable
                else f"EC2 runs no {names} AMIs; use an image for x86_64 or arm64",
            )

    def _resolve_regions(self) -> list[str]:
        wanted = self.request.copy_to
        if not wanted:
            return []
        regions = {r.name: r for r in ec2_images.all_regions(self.ec2)}
        if wanted == ("all",):
            return [name for name, r in regions.items() if r.enabled and name != self.region]
        chosen: list[str] = []
        for name in wanted:
            region = regions.get(name)
            if region is None:
                raise UsageError(
                    f"--copy-to {name}: no such region (DescribeRegions does not list it)",
                    fix="check the spelling; aws ec2 describe-regions --all-regions lists them",
                )
            if not region.enabled:
                raise UsageError(
                    f"--copy-to {name}: the region is not enabled for this account",
                    fix="enable it in the account settings, or leave it out",
                )
            if name != self.region and name not in chosen:
                chosen.append(name)
        return chosen

    # ------------------------------------------------------------------ the steps

    def upload(self) -> None:
        if self.j.manifest_url or self.j.task_id:
            return
        self.checkpoint("upload")
        request = self.request.upload
        # a run stopped while uploading left the upload's own record: continue that upload
        resume = (
            self.j.step == "upload"
            and request.record_state
            and find_state(request.image, request.state_dir) is not None
        )
        self.journal.step("upload")
        self.notify(f"uploading {request.image}" + (" (continuing)" if resume else ""))
        result = upload_image(
            dataclasses.replace(request, resume=resume),
            self.settings,
            progress=self.progress,
            notify=self.notify,
        )
        self.checkpoint("upload-done")
        self.journal.update(
            manifest_url=result.manifest_url,
            bucket=result.bucket,
            manifest_key=result.manifest_key,
            file_format=result.file_format,
            file_bytes=result.file_bytes,
            import_gib=result.volume_gib,
        )

    def import_volume(self) -> None:
        if self.j.volume_id:
            return
        if not self.j.task_id:
            self.checkpoint("import")
            self.journal.step("import")
            zone = (
                self.j.availability_zone
                or self.request.availability_zone
                or ec2_images.first_available_zone(self.ec2)
            )
            self.journal.update(availability_zone=zone)
            task_id = self._task_reading_manifest()
            if task_id is None:
                assert self.j.manifest_url and self.j.file_format and self.j.file_bytes
                spec = VolumeImportSpec(
                    disk=DiskImageSpec(
                        format=self.j.file_format,
                        file_bytes=self.j.file_bytes,
                        manifest_url=self.j.manifest_url,
                        volume_gib=self.j.import_gib or 1,
                    ),
                    availability_zone=zone,
                    description=f"manifestkit import-ami {self.request.name}",
                )
                task_id = ec2.import_volume(self.ec2, spec).id
                self.checkpoint("import-called")
            self.journal.update(task_id=task_id)
            self.notify(f"importing: conversion task {task_id} in {zone}")
        assert self.j.task_id
        task = ec2.wait_for_task(
            self.ec2, self.j.task_id, settings=self.wait, progress=self.progress
        )
        if not task.succeeded:
            raise ConversionTaskFailed(task)
        if not task.volume_id:
            raise RemoteError(f"conversion task {task.id} completed without naming its volume")
        self.journal.update(volume_id=task.volume_id, volume_gib=task.volume_gib)
        ec2_images.create_tags(self.ec2, [task.volume_id], self.tags)

    def _task_reading_manifest(self) -> str | None:
        """The conversion task a run killed right after ImportVolume started, if any."""
        from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url

        for task in ec2.describe_tasks(self.ec2):
            if task.kind != "volume" or task.state not in ("active", "completed"):
                continue
            try:
                info = parse_presigned_url(task.manifest_url or "")
            except PresignedUrlError:
                continue
            if (info.bucket, info.key) == (self.j.bucket, self.j.manifest_key):
                return task.id
        return None

    def snapshot(self) -> None:
        assert self.j.volume_id
        if not self.j.snapshot_id:
            self.checkpoint("snapshot")
            self.journal.step("snapshot")
            adopted = [
                s
                for s in ec2_images.snapshots_tagged(self.ec2, RUN_TAG, self.j.run_id)
                if s.volume_id == self.j.volume_id and s.state != "error"
            ]
            if adopted:
                snapshot_id = adopted[0].id
            else:
                snapshot_id = ec2_images.create_snapshot(
                    self.ec2,
                    self.j.volume_id,
                    description=f"manifestkit import-ami {self.request.name}",
                    tags=self.tags,
                ).id
                self.checkpoint("snapshot-called")
            self.journal.update(snapshot_id=snapshot_id)
            self.notify(f"snapshot {snapshot_id} of {self.j.volume_id}")
        if self.j.snapshot_gib is None:
            assert self.j.snapshot_id
            done = ec2_images.wait_snapshot(self.ec2, self.j.snapshot_id, settings=self.wait)
            self.journal.update(snapshot_gib=done.volume_gib)

    def register(self) -> None:
        assert self.j.snapshot_id and self.j.snapshot_gib is not None
        if not self.j.image_id:
            self.checkpoint("register")
            self.journal.step("register")
            existing = ec2_images.image_named(self.ec2, self.request.name)
            if existing is not None and not self.ours(existing):
                raise _name_taken(self.request.name, self.region, existing)
            if existing is not None:
                image_id = existing.id
            else:
                image_id = ec2_images.register_image(self.ec2, self._spec())
                self.checkpoint("register-called")
            self.journal.update(image_id=image_id)
            self.notify(f"registered {image_id} ({self.request.name})")
        if not self.j.image_available:
            assert self.j.image_id
            ec2_images.wait_image(self.ec2, self.j.image_id, settings=self.wait, region=self.region)
            self.journal.update(image_available=True)

    def _spec(self) -> ImageSpec:
        snapshot_gib = self.j.snapshot_gib or 1
        size = self.request.volume_gib or max(self.j.volume_gib or 1, snapshot_gib)
        if size < snapshot_gib:
            raise UsageError(
                f"--volume-size {size} GiB is smaller than the snapshot ({snapshot_gib} GiB)",
                fix=f"give at least {snapshot_gib}, or leave --volume-size out",
            )
        assert self.j.snapshot_id
        return ImageSpec(
            name=self.request.name,
            snapshot_id=self.j.snapshot_id,
            volume_gib=size,
            architecture=self.request.architecture,
            boot_mode=self.request.boot_mode,
            ena_support=self.request.ena_support,
            sriov_net_support=self.request.sriov_net_support,
            root_device_name=self.request.root_device_name,
            volume_type=self.request.volume_type,
            imds_support=self.request.imds_support,
            tpm_support=self.request.tpm_support,
            description=self.request.description,
            tags=tuple(self.tags),
        )

    def copies(self) -> None:
        pending = [r for r in self.copy_regions if not self.j.copy_for(r).available]
        if not pending:
            return
        self.checkpoint("copy")
        self.journal.step("copy")
        assert self.j.image_id
        for region in pending:
            if self.j.copy_for(region).image_id:
                continue
            client = self.client(region)
            existing = ec2_images.image_named(client, self.request.name)
            if existing is not None and not self.ours(existing):
                raise _name_taken(self.request.name, region, existing)
            if existing is not None:
                image_id = existing.id
            else:
                image_id = ec2_images.copy_image(
                    client,
                    source_image_id=self.j.image_id,
                    source_region=self.region,
                    name=self.request.name,
                    description=self.request.description,
                    tags=self.tags,
                )
                self.checkpoint("copy-called")
            self.journal.update(copies=self.j.with_copy(CopyRecord(region, image_id)).copies)
            self.notify(f"copying to {region}: {image_id}")
        self._wait_copies(pending)

    def _wait_copies(self, regions: Sequence[str]) -> None:
        """Wait for every copy at once; record each as it becomes available."""
        stop = threading.Event()

        def sleep(seconds: float) -> None:
            if stop.wait(seconds):
                raise _Stopped

        settings = dataclasses.replace(self.wait, sleep=sleep)
        failures: list[ManifestkitError] = []
        pool = ThreadPoolExecutor(max_workers=min(8, len(regions)), thread_name_prefix="ami-copy")
        futures: dict[Future[Image], str] = {}
        try:
            for region in regions:
                image_id = self.j.copy_for(region).image_id
                assert image_id
                futures[
                    pool.submit(
                        ec2_images.wait_image,
                        self.client(region),
                        image_id,
                        settings=settings,
                        region=region,
                    )
                ] = region
            remaining = set(futures)
            while remaining:
                done, remaining = wait_futures(remaining, return_when=FIRST_EXCEPTION)
                for future in done:
                    region = futures[future]
                    try:
                        image = future.result()
                    except ManifestkitError as exc:
                        failures.append(exc)
                        continue
                    record = dataclasses.replace(
                        self.j.copy_for(region), snapshot_ids=image.snapshot_ids, available=True
                    )
                    self.journal.update(copies=self.j.with_copy(record).copies)
        finally:
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        if failures:
            first = failures[0]
            more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
            raise type(first)(first.message + more, fix=first.fix)

    def share(self) -> None:
        request = self.request
        if not request.public and not request.share_with:
            return
        self.checkpoint("share")
        self.journal.step("share")
        accounts = list(request.share_with)
        if not self.j.shared:
            assert self.j.image_id
            image = ec2_images.describe_image(self.ec2, self.j.image_id)
            if image is None:
                raise RemoteError(f"image {self.j.image_id} is gone")
            ec2_images.grant_launch(self.ec2, image, public=request.public, accounts=accounts)
            self.journal.update(shared=True)
        for region in self.copy_regions:
            record = self.j.copy_for(region)
            if record.shared or not record.image_id:
                continue
            image = ec2_images.describe_image(self.client(region), record.image_id)
            if image is None:
                raise RemoteError(f"image {record.image_id} in {region} is gone")
            ec2_images.grant_launch(
                self.client(region), image, public=request.public, accounts=accounts
            )
            self.journal.update(
                copies=self.j.with_copy(dataclasses.replace(record, shared=True)).copies
            )

    def cleanup(self) -> None:
        self.checkpoint("cleanup")
        self.journal.step("cleanup")
        if self.j.volume_id and not self.j.volume_deleted:
            ec2_images.delete_volume(self.ec2, self.j.volume_id)
            self.journal.update(volume_deleted=True)
        if not self.request.keep_upload and self.j.manifest_url and not self.j.upload_deleted:
            self._delete_upload()
        self.journal.step("done")

    def _delete_upload(self) -> None:
        from manifestkit.aws import s3_client
        from manifestkit.s3.url_policy import UrlPolicy
        from manifestkit.workflow.delete import delete_upload

        assert self.j.manifest_url
        delete_upload(
            self.j.manifest_url,
            s3_client=lambda: s3_client(self.session, self.settings),
            url_policy=UrlPolicy.from_settings(self.settings),
        )
        self.journal.update(upload_deleted=True, manifest_url=None)

    # ------------------------------------------------------------------ the end

    def result(self) -> AmiResult:
        j = self.j
        assert j.image_id and j.snapshot_id
        shared = tuple(self.request.share_with)
        images = [
            RegionImage(self.region, j.image_id, (j.snapshot_id,), self.request.public, shared)
        ]
        for region in self.copy_regions:
            record = j.copy_for(region)
            assert record.image_id
            images.append(
                RegionImage(
                    region, record.image_id, record.snapshot_ids, self.request.public, shared
                )
            )
        return AmiResult(
            name=j.name,
            run_id=j.run_id,
            region=self.region,
            image_id=j.image_id,
            snapshot_id=j.snapshot_id,
            import_task_id=j.task_id,
            availability_zone=j.availability_zone,
            volume_id=j.volume_id,
            volume_deleted=j.volume_deleted,
            upload=_where(j.bucket, j.manifest_key),
            upload_deleted=j.upload_deleted,
            images=tuple(images),
            journal=str(self.journal.path) if self.journal.path else None,
            continued=self.journal.continued,
        )

    def undo(self, error: ManifestkitError) -> ManifestkitError:
        """Remove what this run created and no longer needs; the error says what happened."""
        j = self.j
        if not (j.manifest_url or j.task_id or j.volume_id or j.snapshot_id or j.image_id):
            # failed before the chain made anything; an upload cut short says itself what it
            # left (its own record lets the next run continue it)
            return error
        if self.request.keep_on_failure:
            return _amended(error, self._kept_text(self._existing()))
        removed: list[str] = []
        problems: list[str] = []

        def attempt(label: str, action: Callable[[], object]) -> bool:
            try:
                action()
            except ManifestkitError as exc:
                problems.append(f"{label} ({exc.message})")
                return False
            removed.append(label)
            return True

        if j.task_id and not j.volume_id:
            # a task still converting (a timeout, say) would make a volume nobody records
            try:
                ec2.cancel_task(self.ec2, j.task_id, "import-ami failed")
            except ManifestkitError:
                pass  # already over: completed volumes are found below, cancelled ones are gone
        for record in j.copies:
            if record.image_id and not record.available:
                image = ec2_images.describe_image(self.client(record.region), record.image_id)
                label = f"{record.image_id} ({record.region})"
                if attempt(
                    label,
                    lambda r=record: ec2_images.deregister_image(self.client(r.region), r.image_id),
                ):
                    for snapshot_id in image.snapshot_ids if image else ():
                        attempt(
                            f"{snapshot_id} ({record.region})",
                            lambda r=record, s=snapshot_id: ec2_images.delete_snapshot(
                                self.client(r.region), s
                            ),
                        )
                    self.journal.update(
                        copies=tuple(c for c in self.j.copies if c.region != record.region)
                    )
        image_gone = not j.image_id
        if j.image_id and not j.image_available:
            image_id = j.image_id
            if attempt(image_id, lambda: ec2_images.deregister_image(self.ec2, image_id)):
                self.journal.update(image_id=None)
                image_gone = True
        if j.snapshot_id and image_gone:
            snapshot_id = j.snapshot_id
            if attempt(snapshot_id, lambda: ec2_images.delete_snapshot(self.ec2, snapshot_id)):
                self.journal.update(snapshot_id=None, snapshot_gib=None)
        if j.volume_id and not j.volume_deleted:
            volume_id = j.volume_id
            if attempt(volume_id, lambda: ec2_images.delete_volume(self.ec2, volume_id)):
                self.journal.update(volume_deleted=True)
        if j.manifest_url and not j.upload_deleted and not self.request.keep_upload:
            attempt(f"the upload ({_where(j.bucket, j.manifest_key)})", self._delete_upload)
        self.journal.update(removed=(*self.j.removed, *removed))
        if not self.j.image_id:
            # nothing of this run is left that a continued run could use: start over next time
            self.journal.update(
                step="start",
                task_id=None,
                volume_id=None,
                volume_gib=None,
                volume_deleted=False,
                **(
                    {"manifest_url": None, "bucket": None, "manifest_key": None}
                    if self.j.upload_deleted
                    else {}
                ),
                upload_deleted=False,
            )
        parts = []
        if removed:
            parts.append("removed " + ", ".join(removed))
        if problems:
            parts.append("could not remove " + ", ".join(problems))
        kept = self._existing()
        if kept:
            parts.append(self._kept_text(kept))
        elif self.journal.path:
            parts.append(f"the journal {self.journal.path} records it")
        return _amended(error, "; ".join(parts) or "nothing was created")

    def _existing(self) -> list[tuple[str, str]]:
        """(label, command that removes it) for each thing of this run that still exists."""
        j = self.j
        things: list[tuple[str, str]] = []
        for record in j.copies:
            if record.image_id:
                things.append(
                    (
                        f"{record.image_id} ({record.region})",
                        f"aws ec2 deregister-image --region {record.region} "
                        f"--image-id {record.image_id}",
                    )
                )
        if j.image_id:
            things.append(
                (
                    j.image_id,
                    f"aws ec2 deregister-image --region {self.region} --image-id {j.image_id}",
                )
            )
        if j.snapshot_id:
            things.append(
                (
                    j.snapshot_id,
                    f"aws ec2 delete-snapshot --region {self.region} --snapshot-id {j.snapshot_id}",
                )
            )
        if j.volume_id and not j.volume_deleted:
            things.append(
                (
                    j.volume_id,
                    f"aws ec2 delete-volume --region {self.region} --volume-id {j.volume_id}",
                )
            )
        if j.manifest_url and not j.upload_deleted:
            where = f"the journal {self.journal.path}" if self.journal.path else "the output"
            things.append(
                (
                    f"the upload ({_where(j.bucket, j.manifest_key)})",
                    f"manifestkit delete URL (URL: manifest_url in {where})",
                )
            )
        return things

    def _kept_text(self, things: list[tuple[str, str]]) -> str:
        if not things:
            return "nothing was created"
        journal = f" (recorded in {self.journal.path})" if self.journal.path else ""
        return (
            f"kept {', '.join(label for label, _ in things)}{journal}: run the same command "
            f"again to continue, or remove them with: {'; '.join(cmd for _, cmd in things)}"
        )


def _where(bucket: str | None, key: str | None) -> str | None:
    return f"s3://{bucket}/{key}" if bucket and key else None


def _name_taken(name: str, region: str, image: Image) -> UsageError:
    error = UsageError(
        f"AMI name {name!r} is already taken in {region} by {image.id} ({image.state})",
        fix=f"choose another --name, or deregister {image.id} first "
        f"(aws ec2 deregister-image --region {region} --image-id {image.id})",
    )
    error.existing_image_id = image.id  # type: ignore[attr-defined]
    return error


def _amended(exc: ManifestkitError, more: str) -> ManifestkitError:
    """The same error leaf (same exit code, same attributes) with ``more`` added to its fix."""
    clone = type(exc).__new__(type(exc))
    ManifestkitError.__init__(clone, exc.message, fix=f"{exc.fix}; {more}" if exc.fix else more)
    clone.__dict__.update({k: v for k, v in exc.__dict__.items() if k not in ("message", "fix")})
    return clone


def import_ami(
    request: AmiRequest,
    settings: AwsSettings,
    *,
    wait: WaitSettings | None = None,
    progress: Progress | None = None,
    notify: Callable[[str], None] | None = None,
    checkpoint: Callable[[str], None] | None = None,
) -> AmiResult:
    """Make ``request.upload.image`` an AMI (see the module docstring); the result has every id.

    Raises ``UsageError``/``CredentialsError`` (exit 2) for bad input and refused permissions,
    ``RemoteError``/``TaskFailed`` (exit 1) for remote failures — after removing what the run
    created unless ``keep_on_failure``; the message says what was removed and what was kept.
    ``KeyboardInterrupt`` removes nothing: the same call continues.
    """
    run = _AmiRun(
        request,
        settings,
        wait or WaitSettings(),
        progress or NoProgress(),
        notify or log.info,
        checkpoint or (lambda step: None),
    )
    run.check_inputs()  # bad input: nothing created, nothing to undo
    try:
        run.upload()
        run.import_volume()
        run.snapshot()
        run.register()
        run.copies()
        run.share()
        run.cleanup()
    except ManifestkitError as exc:
        raise run.undo(exc) from exc
    return run.result()
