"""Conversion tasks: their state machine, a thread-safe store, and frozen snapshots to render.

States (ConversionTask.State in the EC2 API): ``active`` -> ``completed``, or ``active`` ->
``cancelling`` -> ``cancelled`` (CancelConversionTask, or the service giving up: bad manifest, bad
part, expiry). Only the conversion worker and CancelConversionTask change a task, always through
``TaskStore`` under its lock; readers get ``TaskSnapshot``s.
"""

from __future__ import annotations

import secrets
import string
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from manifestkit.sandbox.import_requests import (
    DiskImageSpec,
    Ec2ApiError,
    ImportInstanceRequest,
    ImportVolumeRequest,
)

ACTIVE = "active"
CANCELLING = "cancelling"
CANCELLED = "cancelled"
COMPLETED = "completed"

#: design.md §4: a task that has not finished about 7 days after creation is cancelled.
TASK_LIFETIME = timedelta(days=7)
#: design.md §4: up to 5 conversion tasks may be active per account.
MAX_ACTIVE_TASKS = 5
#: status message while the service waits for the upload (as ec2-describe-conversion-tasks showed)
PENDING_MESSAGE = "Pending"
EXPIRED_MESSAGE = (
    "The conversion task expired: the import did not complete before its expiration time"
)

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_task_id(kind: str) -> str:
    """``import-i-xxxxxxxx`` or ``import-vol-xxxxxxxx``, as in the API reference's examples."""
    prefix = "import-i-" if kind == "instance" else "import-vol-"
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(8))


@dataclass(frozen=True)
class TaskSnapshot:
    """Everything DescribeConversionTasks shows about one task, at one moment."""

    task_id: str
    #: ``instance`` | ``volume``
    kind: str
    account_id: str
    region: str
    created: datetime
    expiration: datetime
    disk: DiskImageSpec
    availability_zone: str
    availability_zone_id: str
    description: str
    state: str = ACTIVE
    status_message: str = PENDING_MESSAGE
    bytes_converted: int = 0
    #: ImportInstance only
    platform: str = ""
    instance_id: str = ""
    #: empty until the task completes (EC2 shows no volume id while a task is active)
    volume_id: str = ""
    #: set once the worker transfers the final image: a cancel can no longer win
    finalizing: bool = False

    @property
    def is_open(self) -> bool:
        """Counts against the active-task limit."""
        return self.state in (ACTIVE, CANCELLING)

    @property
    def volume_status(self) -> str:
        """The per-volume ``status`` of ImportInstance's volume items mirrors the task."""
        return self.state


def new_snapshot(
    request: ImportInstanceRequest | ImportVolumeRequest,
    *,
    account_id: str,
    region: str,
    now: datetime,
    availability_zone: str,
    availability_zone_id: str,
    lifetime: timedelta = TASK_LIFETIME,
) -> TaskSnapshot:
    is_instance = isinstance(request, ImportInstanceRequest)
    kind = "instance" if is_instance else "volume"
    return TaskSnapshot(
        task_id=new_task_id(kind),
        kind=kind,
        account_id=account_id,
        region=region,
        created=now,
        expiration=now + lifetime,
        disk=request.disk,
        availability_zone=availability_zone,
        availability_zone_id=availability_zone_id,
        description=request.description,
        platform=request.platform if is_instance else "",
    )


class TaskStore:
    """All conversion tasks of one sandbox, keyed by id; every change happens under one lock."""

    def __init__(self, *, max_active: int = MAX_ACTIVE_TASKS) -> None:
        self._lock = threading.Lock()
        self._tasks: dict[str, TaskSnapshot] = {}
        self._cancel_events: dict[str, threading.Event] = {}
        self.max_active = max_active

    def add(self, task: TaskSnapshot) -> threading.Event:
        """Register a new task; the returned event is set when the task should stop working."""
        with self._lock:
            active = sum(
                1 for t in self._tasks.values() if t.account_id == task.account_id and t.is_open
            )
            if active >= self.max_active:
                raise Ec2ApiError(
                    "ResourceLimitExceeded",
                    f"You have reached the limit of {self.max_active} active conversion tasks. "
                    "Wait for a task to complete or cancel one (CancelConversionTask), then retry.",
                )
            self._tasks[task.task_id] = task
            event = threading.Event()
            self._cancel_events[task.task_id] = event
            return event

    def get(self, task_id: str) -> TaskSnapshot | None:
        with self._lock:
            return self._tasks.get(task_id)

    def select(
        self, account_id: str, region: str, task_ids: Iterable[str] = ()
    ) -> list[TaskSnapshot]:
        """Tasks of one account and region: all, or those asked for (an unknown id is an error)."""
        wanted = list(task_ids)
        with self._lock:
            mine = {
                t.task_id: t
                for t in self._tasks.values()
                if t.account_id == account_id and t.region == region
            }
        if not wanted:
            return sorted(mine.values(), key=lambda t: t.created)
        missing = [task_id for task_id in wanted if task_id not in mine]
        if missing:
            raise not_found(missing[0])
        return [mine[task_id] for task_id in dict.fromkeys(wanted)]

    def select_open(self) -> list[TaskSnapshot]:
        """Every task still counting against the limit (active or cancelling)."""
        with self._lock:
            return [t for t in self._tasks.values() if t.is_open]

    def update(
        self, task_id: str, change: Callable[[TaskSnapshot], TaskSnapshot | None]
    ) -> TaskSnapshot:
        """Apply ``change`` under the lock; it returns a new snapshot, or None to keep the task."""
        with self._lock:
            current = self._tasks[task_id]
            new = change(current)
            if new is not None:
                self._tasks[task_id] = new
                if not new.is_open or new.state == CANCELLING:
                    self._cancel_events[task_id].set()
                return new
            return current

    def remove(self, task_id: str) -> None:
        """Forget a task whose creating call failed after all (it was never shown to anyone)."""
        with self._lock:
            self._tasks.pop(task_id, None)
            self._cancel_events.pop(task_id, None)

    def stop_all(self) -> None:
        """Sandbox shutdown: every worker stops at its next checkpoint; states stay as they are."""
        with self._lock:
            for event in self._cancel_events.values():
                event.set()

    def cancel_event(self, task_id: str) -> threading.Event:
        with self._lock:
            return self._cancel_events[task_id]


def not_found(task_id: str) -> Ec2ApiError:
    """EC2's documented code for a conversion task id that names no task of this account."""
    return Ec2ApiError(
        "InvalidConversionTaskId", f"The conversion task ID '{task_id}' does not exist"
    )


# -- transitions: pure functions TaskSnapshot -> TaskSnapshot | None, applied by TaskStore.update --


def progressed(bytes_converted: int) -> Callable[[TaskSnapshot], TaskSnapshot | None]:
    def change(task: TaskSnapshot) -> TaskSnapshot | None:
        if task.state != ACTIVE:
            return None
        percent = bytes_converted * 100 // max(1, task.disk.bytes)
        return replace(
            task, bytes_converted=bytes_converted, status_message=f"Progress: {percent}%"
        )

    return change


def status(message: str) -> Callable[[TaskSnapshot], TaskSnapshot | None]:
    def change(task: TaskSnapshot) -> TaskSnapshot | None:
        return replace(task, status_message=message) if task.state == ACTIVE else None

    return change


def begin_final_transfer(task: TaskSnapshot) -> TaskSnapshot | None:
    """From here CancelConversionTask fails (API reference: 'transferring the final disk image')."""
    return replace(task, finalizing=True) if task.state == ACTIVE else None


def completed(volume_id: str) -> Callable[[TaskSnapshot], TaskSnapshot | None]:
    def change(task: TaskSnapshot) -> TaskSnapshot | None:
        if task.state != ACTIVE:
            return None
        return replace(
            task,
            state=COMPLETED,
            status_message="",
            volume_id=volume_id,
            bytes_converted=task.disk.bytes,
        )

    return change


def service_cancelled(message: str) -> Callable[[TaskSnapshot], TaskSnapshot | None]:
    """The service gives up on an active task (bad input, expiry)."""

    def change(task: TaskSnapshot) -> TaskSnapshot | None:
        if task.state != ACTIVE:
            return None
        return replace(task, state=CANCELLED, status_message=message)

    return change


def cancel_requested(reason: str) -> Callable[[TaskSnapshot], TaskSnapshot | None]:
    """CancelConversionTask: active -> cancelling; the worker (or ``finish_cancel``) ends it."""

    def change(task: TaskSnapshot) -> TaskSnapshot | None:
        if task.state == CANCELLING:
            return None
        if task.state != ACTIVE or task.finalizing:
            raise Ec2ApiError(
                "IncorrectState",
                f"Conversion task {task.task_id} is {task.state}"
                + (" (transferring the final disk image)" if task.finalizing else "")
                + " and cannot be cancelled",
            )
        return replace(task, state=CANCELLING, status_message=reason or "Cancelled by user")

    return change


def finish_cancel(task: TaskSnapshot) -> TaskSnapshot | None:
    """cancelling -> cancelled, keeping the reason as the status message."""
    return replace(task, state=CANCELLED) if task.state == CANCELLING else None


def expire_if_due(now: datetime) -> Callable[[TaskSnapshot], TaskSnapshot | None]:
    def change(task: TaskSnapshot) -> TaskSnapshot | None:
        if task.state == ACTIVE and not task.finalizing and now >= task.expiration:
            return replace(task, state=CANCELLED, status_message=EXPIRED_MESSAGE)
        return None

    return change
