"""The sandbox's EC2 import endpoint: ImportInstance, ImportVolume, DescribeConversionTasks and
CancelConversionTask over the EC2 Query protocol, next to moto's EC2 in the same server.

The sandbox middleware calls ``handle(environ, context)`` for EC2 Query requests naming one of
these actions, after it has checked the SigV4 signature; ``None`` means "not mine, pass it on to
moto". Tasks run in the background (``import_worker``) and end with a real instance / volume in
moto's EC2 backend, so DescribeInstances / DescribeVolumes show what a completed task names.

Sandbox knobs (not EC2's), read when a task starts (environment of the sandbox process):
``MANIFESTKIT_SANDBOX_PART_WAIT`` (seconds to wait for a missing manifest or part before the task
is cancelled naming it; default: until the task expires, as AWS does),
``MANIFESTKIT_SANDBOX_PART_DELAY`` (seconds of pause after each part; default 0) and
``MANIFESTKIT_SANDBOX_POLL_INTERVAL`` (default 0.2). ``configure(context, settings)`` sets them
in code instead.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from manifestkit.images.info import ImageInfo
from manifestkit.sandbox import import_tasks as tasks
from manifestkit.sandbox import import_xml as xml
from manifestkit.sandbox.import_requests import (
    Ec2ApiError,
    ImportInstanceRequest,
    ImportVolumeRequest,
    dry_run_error,
    is_dry_run,
    parse_cancel,
    parse_describe,
    parse_import_instance,
    parse_import_volume,
)
from manifestkit.sandbox.import_tasks import TaskSnapshot, TaskStore
from manifestkit.sandbox.import_worker import (
    ConversionEnvironment,
    ImporterSettings,
    run_conversion,
)

log = logging.getLogger(__name__)

ACTIONS = frozenset(
    {"ImportInstance", "ImportVolume", "DescribeConversionTasks", "CancelConversionTask"}
)
#: where an imported instance's disk is attached (the root device EC2 gives imported instances)
ROOT_DEVICE = "/dev/sda1"

Response = tuple[int, list[tuple[str, str]], bytes]


class MotoEc2:
    """The few calls into moto's EC2 backend the import endpoint needs (moto 5.2.1, pinned)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend

    def zones(self) -> dict[str, str]:
        """Zone name -> zone id for the backend's region."""
        return {zone.name: zone.zone_id for zone in self.backend.describe_availability_zones()}

    def check_launch(self, request: ImportInstanceRequest) -> None:
        """What RunInstances would refuse, checked before DryRun answers (as EC2 does)."""
        from moto.ec2.models.instance_types import INSTANCE_TYPES

        launch = request.launch
        if launch.instance_type is not None and launch.instance_type not in INSTANCE_TYPES:
            raise Ec2ApiError(
                "InvalidParameterValue", f"Invalid value '{launch.instance_type}' for InstanceType."
            )
        with _moto_errors():
            for name in launch.group_names:
                if self.backend.get_security_group_by_name_or_id(name) is None:
                    raise Ec2ApiError(
                        "InvalidGroup.NotFound", f"The security group '{name}' does not exist"
                    )
            for group_id in launch.group_ids:
                if self.backend.get_security_group_from_id(group_id) is None:
                    raise Ec2ApiError(
                        "InvalidGroup.NotFound", f"The security group '{group_id}' does not exist"
                    )
            if launch.subnet_id:
                self.backend.get_subnet(launch.subnet_id)

    def create_stopped_instance(self, request: ImportInstanceRequest, zone: str) -> str:
        """The instance ImportInstance names at once: stopped, no volume until the task ends."""
        from moto.ec2.utils import parse_user_data

        launch = request.launch
        with _moto_errors():
            reservation = self.backend.run_instances(
                "",
                1,
                parse_user_data(launch.user_data),
                list(launch.group_names),
                instance_type=launch.instance_type or "m1.small",
                is_instance_type_default=launch.instance_type is None,
                placement=None if launch.subnet_id else zone,
                region_name=self.backend.region_name,
                subnet_id=launch.subnet_id,
                private_ip=launch.private_ip,
                security_group_ids=list(launch.group_ids),
                instance_initiated_shutdown_behavior=launch.shutdown_behaviour,
                monitoring_state="enabled" if launch.monitoring else "disabled",
                # no default root volume: the imported disk becomes the root volume
                block_device_mappings=[],
                tags={},
            )
        instance = reservation.instances[0]
        instance.architecture = launch.architecture
        if request.platform == "Windows":
            instance.platform = "windows"
        instance.stop()
        return str(instance.id)

    def create_volume(self, size_gib: int, zone: str, attach_to: str | None) -> str:
        with _moto_errors():
            volume = self.backend.create_volume(size=size_gib, zone_name=zone)
            if attach_to:
                self.backend.attach_volume(volume.id, attach_to, ROOT_DEVICE, True)
        return str(volume.id)

    def terminate(self, instance_id: str) -> None:
        """CancelConversionTask 'removes all artifacts of the conversion' (API reference)."""
        with _moto_errors():
            self.backend.terminate_instances([instance_id])


@contextmanager
def _moto_errors() -> Iterator[None]:
    """Turn moto's EC2 exceptions into EC2 error answers (they carry EC2's own codes)."""
    from moto.core.exceptions import ServiceException

    try:
        yield
    except ServiceException as exc:
        raise Ec2ApiError(str(exc.code), str(exc.message)) from exc


def _default_inspect(path: Path) -> ImageInfo:
    from manifestkit.images import inspect_image

    # deep: read the whole image as the converter does, so a corrupt stream fails the task
    return inspect_image(path, deep=True)


class ImportEndpoint:
    """Conversion tasks of one sandbox; one instance per sandbox server."""

    def __init__(
        self,
        *,
        ec2_backend: Callable[[str, str], Any],
        clock: Callable[[], datetime],
        settings: Callable[[], ImporterSettings] = ImporterSettings.from_env,
        submit: Callable[[Callable[[], None]], object] | None = None,
        inspect: Callable[[Path], ImageInfo] = _default_inspect,
        stopping: threading.Event | None = None,
        temp_dir: str | None = None,
    ) -> None:
        #: (region, account id) -> moto's EC2 backend
        self.ec2_backend = ec2_backend
        self.clock = clock
        self.settings = settings
        self.submit = submit or _thread_per_task
        self.inspect = inspect
        #: set when the sandbox stops: every worker returns at its next checkpoint
        self.stopping = stopping or threading.Event()
        self.temp_dir = temp_dir
        self.store = TaskStore()

    # -- dispatch ----------------------------------------------------------------------------

    def handle_params(self, params: Mapping[str, str], region: str, account_id: str) -> Response:
        action = params.get("Action", "")
        version = params.get("Version", "")
        request_id = xml.new_request_id()
        try:
            self._expire_due()
            if action in ("ImportInstance", "ImportVolume"):
                task = self._create(action, params, region, account_id)
                body = xml.task_response(action, version, request_id, task)
            elif action == "DescribeConversionTasks":
                ids = parse_describe(params)
                if is_dry_run(params):
                    raise dry_run_error()
                body = xml.describe_response(
                    version, request_id, self.store.select(account_id, region, ids)
                )
            elif action == "CancelConversionTask":
                self._cancel(params, region, account_id)
                body = xml.cancel_response(version, request_id)
            else:
                raise Ec2ApiError("InvalidAction", f"The action {action} is not valid")
        except Ec2ApiError as error:
            return _answer(error.status, xml.error_response(error, request_id))
        except Exception:  # an EC2 answer, never a dropped connection
            log.exception("import endpoint: %s failed", action)
            error = Ec2ApiError("InternalError", "An internal error has occurred", 500)
            return _answer(500, xml.error_response(error, request_id))
        return _answer(200, body)

    def close(self) -> None:
        """Stop every background task (the sandbox is shutting down)."""
        self.store.stop_all()

    # -- actions -----------------------------------------------------------------------------

    def _create(
        self, action: str, params: Mapping[str, str], region: str, account_id: str
    ) -> TaskSnapshot:
        ec2 = MotoEc2(self.ec2_backend(region, account_id))
        zones = ec2.zones()
        request: ImportInstanceRequest | ImportVolumeRequest
        if action == "ImportInstance":
            request = parse_import_instance(params, zones, region)
            ec2.check_launch(request)
            zone = request.launch.availability_zone or (min(zones) if zones else f"{region}a")
            if request.launch.subnet_id:
                zone = ec2.backend.get_subnet(request.launch.subnet_id).availability_zone
        else:
            request = parse_import_volume(params, zones, region)
            zone = request.availability_zone
        if is_dry_run(params):
            raise dry_run_error()
        try:
            settings = self.settings()
        except ValueError as exc:  # a bad MANIFESTKIT_SANDBOX_* value: say which
            raise Ec2ApiError("InternalError", f"sandbox misconfigured: {exc}", 500) from None
        self.store.max_active = settings.max_active
        task = tasks.new_snapshot(
            request,
            account_id=account_id,
            region=region,
            now=self.clock(),
            availability_zone=zone,
            availability_zone_id=zones.get(zone, ""),
            lifetime=settings.lifetime,
        )
        self.store.add(task)  # ResourceLimitExceeded before anything is created
        if isinstance(request, ImportInstanceRequest):
            try:
                instance_id = ec2.create_stopped_instance(request, zone)
            except Exception:
                self.store.remove(task.task_id)  # the call failed: no task exists
                raise
            task = self.store.update(task.task_id, lambda t: _with_instance(t, instance_id))
        env = ConversionEnvironment(
            store=self.store,
            clock=self.clock,
            settings=settings,
            finish=lambda t: self._finish(ec2, t),
            discard=lambda t: self._discard(ec2, t),
            inspect=self.inspect,
            stopping=self.stopping,
            temp_dir=self.temp_dir,
        )
        task_id = task.task_id
        self.submit(lambda: run_conversion(task_id, env))
        return task

    def _cancel(self, params: Mapping[str, str], region: str, account_id: str) -> None:
        request = parse_cancel(params)
        if is_dry_run(params):
            raise dry_run_error()
        task = self.store.get(request.task_id)
        if task is None or task.account_id != account_id or task.region != region:
            raise tasks.not_found(request.task_id)
        self.store.update(request.task_id, tasks.cancel_requested(request.reason))
        # the worker sees the cancel at its next chunk or poll and ends it ``cancelled``

    def _expire_due(self) -> None:
        now = self.clock()
        for task in self.store.select_open():
            self.store.update(task.task_id, tasks.expire_if_due(now))

    # -- what a task leaves in EC2 ------------------------------------------------------------

    @staticmethod
    def _finish(ec2: MotoEc2, task: TaskSnapshot) -> str:
        return ec2.create_volume(
            task.disk.volume_gib, task.availability_zone, task.instance_id or None
        )

    @staticmethod
    def _discard(ec2: MotoEc2, task: TaskSnapshot) -> None:
        if task.instance_id:
            ec2.terminate(task.instance_id)


def _with_instance(task: TaskSnapshot, instance_id: str) -> TaskSnapshot:
    return replace(task, instance_id=instance_id)


def _thread_per_task(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="manifestkit-import-task", daemon=True).start()


def _answer(status: int, body: bytes) -> Response:
    """``(status, headers, body)`` as the sandbox middleware wants it (it adds Content-Length)."""
    return status, list(xml.XML_HEADERS), body


# -- the hook the sandbox middleware calls --------------------------------------------------------

#: where the endpoint lives in ``SandboxContext.state`` (kept for the sandbox's lifetime)
_STATE_KEY = "manifestkit.sandbox.importer"
#: what the sandbox middleware puts in environ (manifestkit/sandbox/server.py)
ENV_PARAMS = "manifestkit.sandbox.params"


def request_params(environ: dict[str, Any]) -> dict[str, str]:
    """The Query parameters: the middleware's parsed copy, or query string + form body."""
    parsed = environ.get(ENV_PARAMS)
    if parsed is not None:
        return dict(parsed)
    params = dict(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        length = 0
    if length > 0:
        body = environ["wsgi.input"].read(length)
        environ["wsgi.input"] = io.BytesIO(body)  # put back for whoever reads next
        params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return params


def endpoint_for(context: Any) -> ImportEndpoint:
    """The one ImportEndpoint of the sandbox ``context`` belongs to (created on first use)."""
    endpoint: ImportEndpoint = context.shared(
        _STATE_KEY,
        lambda: ImportEndpoint(
            ec2_backend=lambda region, account: context.ec2_backend(region, account),
            clock=context.clock.now,
            submit=context.submit,
            stopping=context.stopping,
        ),
    )
    return endpoint


def configure(context: Any, settings: ImporterSettings | None) -> None:
    """Fix the sandbox knobs in code for new tasks of this sandbox (None: the environment)."""
    endpoint_for(context).settings = (
        ImporterSettings.from_env if settings is None else (lambda: settings)
    )


def handle(environ: dict[str, Any], context: Any) -> Response | None:
    """The hook ``SandboxApp`` calls for the four import actions, after the SigV4 check."""
    params = request_params(environ)
    if params.get("Action") not in ACTIONS:
        return None
    return endpoint_for(context).handle_params(params, *context.signed_for(environ))
