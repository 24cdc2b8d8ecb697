"""``manifestkit tasks [ID ...] [--watch]`` and ``manifestkit cancel ID [--reason TEXT]``."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from manifestkit import ec2
from manifestkit.aws import AwsSettings, ec2_client, make_session
from manifestkit.cli._aws_options import (
    add_aws_options,
    add_refused_local_option,
    aws_settings_for,
    refuse_local,
)
from manifestkit.cli._output import emit
from manifestkit.ec2 import ConversionTask, WaitSettings
from manifestkit.errors import ManifestkitError, RemoteError
from manifestkit.sizes import format_size

#: seconds between polls: EC2 updates a task every few seconds; the sandbox in well under one
AWS_INTERVAL = 15.0
LOOPBACK_INTERVAL = 0.25


def register(subparsers: Any, common: argparse.ArgumentParser) -> None:
    tasks = subparsers.add_parser(
        "tasks",
        parents=[common],
        description="Show EC2 conversion tasks: all of them, or the ids given. With --watch, "
        "follow them until each one is completed or cancelled. To try it offline, run "
        "manifestkit sandbox in another terminal and export the lines it prints.",
    )
    tasks.add_argument(
        "task_ids", nargs="*", metavar="ID", help="conversion task ids (default: all)"
    )
    tasks.add_argument(
        "--watch",
        action="store_true",
        help="follow the tasks (the active ones when no id is given) until they end",
    )
    add_interval_option(tasks)
    add_aws_options(tasks, local=False)
    add_refused_local_option(tasks)
    tasks.set_defaults(run=run_tasks)

    cancel = subparsers.add_parser(
        "cancel",
        parents=[common],
        description="Cancel an active conversion task (EC2 CancelConversionTask).",
    )
    cancel.add_argument(
        "task_id", metavar="ID", help="the conversion task id (import-i-... / import-vol-...)"
    )
    cancel.add_argument("--reason", metavar="TEXT", help="reason recorded with the cancellation")
    add_aws_options(cancel, local=False)
    add_refused_local_option(cancel)
    cancel.set_defaults(run=run_cancel)


def add_interval_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        help=f"seconds between polls (default: {AWS_INTERVAL:g} on AWS, less on a local endpoint)",
    )


def poll_interval(args: argparse.Namespace, settings: AwsSettings, client: Any = None) -> float:
    if getattr(args, "interval", None):
        return max(0.05, float(args.interval))
    endpoint = settings.ec2_endpoint_url
    if endpoint is None:
        # AWS_ENDPOINT_URL_EC2 or a profile's endpoint_url: the client boto3 builds knows it
        try:
            endpoint = (client or make_ec2(settings)).meta.endpoint_url
        except ManifestkitError:  # no region yet: the call itself will say so
            endpoint = ""
    host = urlsplit(endpoint or "").hostname or ""
    return LOOPBACK_INTERVAL if host in ("127.0.0.1", "localhost", "::1") else AWS_INTERVAL


def make_ec2(settings: AwsSettings) -> Any:
    return ec2_client(make_session(settings), settings)


# --------------------------------------------------------------------------- text


def format_progress(task: ConversionTask) -> str:
    if not task.image_bytes:
        return format_size(task.bytes_converted)
    percent = 100.0 * task.bytes_converted / task.image_bytes
    return (
        f"{format_size(task.bytes_converted)} of {format_size(task.image_bytes)} ({percent:.0f}%)"
    )


def format_task(task: ConversionTask) -> str:
    """A few lines about one task, for people."""
    lines = [f"{task.id}  {task.state}"]
    if task.status_message:
        lines[0] += f"  {task.status_message}"
    if task.instance_id:
        lines.append(f"  instance   {task.instance_id}")
    if task.volume_ids:
        lines.append(f"  volume     {', '.join(task.volume_ids)}")
    elif task.is_active:
        lines.append("  volume     (assigned when the task completes)")
    image = f"{task.image_format or '?'}, {format_size(task.image_bytes)}"
    if task.volume_gib:
        image += f" -> {task.volume_gib} GiB volume"
    if task.availability_zone:
        image += f" in {task.availability_zone}"
    lines.append(f"  image      {image}")
    lines.append(f"  converted  {format_progress(task)}")
    if task.expiration_time and task.is_active:
        lines.append(f"  expires    {task.expiration_time}")
    return "\n".join(lines)


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%H:%M:%S")


def format_change(task: ConversionTask) -> str:
    """One line for a state or status change (what --watch prints off a terminal)."""
    line = f"{_stamp()} {task.id} {task.state}"
    if task.status_message:
        line += f": {task.status_message}"
    if task.is_final or task.bytes_converted:
        line += f" [{format_progress(task)}]"
    if task.succeeded:
        ids = [i for i in (task.instance_id, *task.volume_ids) if i]
        if ids:
            line += " -> " + " ".join(ids)
    return line


# --------------------------------------------------------------------------- watching

_NUMBERS = re.compile(r"\d+(?:\.\d+)?")


class ChangeFilter:
    """Decides which changes are worth a line: a new state or a new kind of status message, and
    progress only in steps of a tenth ("Progress: 61%" -> "62%" is not news; 60% -> 70% is)."""

    def __init__(self, *, progress_steps: bool = True) -> None:
        #: False when a progress bar already shows the bytes (on a terminal)
        self._steps = progress_steps
        self._last: dict[str, tuple[str, str, int]] = {}

    def __call__(self, task: ConversionTask) -> bool:
        shape = _NUMBERS.sub("#", task.status_message)
        tenth = 0
        if self._steps and task.image_bytes:
            tenth = 10 * task.bytes_converted // task.image_bytes
        key = (task.state, shape, tenth)
        if self._last.get(task.id) == key:
            return False
        self._last[task.id] = key
        return True


class TaskBars:
    """One tqdm bar per task on a terminal; one line per change otherwise (never per poll)."""

    def __init__(self, *, quiet: bool, stream: Any = None) -> None:
        self._stream = stream or sys.stderr
        self._tty = not quiet and bool(getattr(self._stream, "isatty", lambda: False)())
        self._quiet = quiet
        self._bars: dict[str, Any] = {}  # tqdm bars
        self._done: dict[str, int] = {}
        self._news = ChangeFilter(progress_steps=not self._tty)

    def poll(self, tasks: list[ConversionTask]) -> None:
        if not self._tty:
            return
        from tqdm import tqdm

        for task in tasks:
            bar = self._bars.get(task.id)
            if bar is None:
                bar = tqdm(
                    total=task.image_bytes or None,
                    desc=task.id,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    position=len(self._bars),
                    file=self._stream,
                    dynamic_ncols=True,
                    leave=True,
                )
                self._bars[task.id] = bar
                self._done[task.id] = 0
            if task.bytes_converted > self._done[task.id]:
                bar.update(task.bytes_converted - self._done[task.id])
                self._done[task.id] = task.bytes_converted
            bar.set_postfix_str(task.state, refresh=True)

    def change(self, task: ConversionTask) -> None:
        if not self._news(task):
            return
        line = format_change(task)
        if self._tty:
            from tqdm import tqdm

            tqdm.write(line, file=self._stream)
        elif not self._quiet:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars.clear()


# --------------------------------------------------------------------------- commands


def run_tasks(args: argparse.Namespace) -> int:
    refuse_local(args, "tasks")
    ids = ec2.iter_ids(args.task_ids)
    with aws_settings_for(args) as settings:
        client = make_ec2(settings)
        if not args.watch:
            tasks = ec2.describe_tasks(client, ids)
            _print_tasks(args, tasks)
            return 0
        bars = TaskBars(quiet=args.quiet or args.output == "json")
        wait = WaitSettings(interval=poll_interval(args, settings, client))
        try:
            final = ec2.watch_tasks(
                client, ids, settings=wait, on_change=bars.change, on_poll=bars.poll
            )
        finally:
            bars.close()
        if not final and not ids:
            _print_tasks(args, [], empty="no active conversion tasks to watch")
            return 0
        _print_tasks(args, final)
        failed = [task for task in final if not task.succeeded]
        for task in failed:
            print(
                f"manifestkit: error: conversion task {task.id} ended {task.state}: "
                f"{task.status_message or 'no status message'}",
                file=sys.stderr,
            )
        return 1 if failed else 0


def _print_tasks(
    args: argparse.Namespace, tasks: list[ConversionTask], *, empty: str = "no conversion tasks"
) -> None:
    text = "\n".join(format_task(task) for task in tasks) if tasks else empty
    emit(args, {"tasks": [task.to_dict() for task in tasks]}, text)


def run_cancel(args: argparse.Namespace) -> int:
    refuse_local(args, "cancel")
    with aws_settings_for(args) as settings:
        client = make_ec2(settings)
        try:
            ec2.cancel_task(client, args.task_id, args.reason)
        except RemoteError as exc:
            ended = _already_ended(client, args.task_id)
            if ended is None:
                raise
            if ended.state != "cancelled":
                raise RemoteError(
                    f"conversion task {args.task_id} has already {ended.state}; there is "
                    "nothing to cancel",
                    fix="manifestkit tasks shows what it made (terminate the instance or "
                    "delete the volume to undo it)",
                ) from exc
            # cancelling a cancelled task is done already, as deleting a deleted upload is
            emit(
                args,
                {"cancelled": args.task_id, "task": ended.to_dict(), "already": True},
                f"{args.task_id} was already cancelled"
                + (f": {ended.status_message}" if ended.status_message else ""),
            )
            return 0
        # the state right after the call: usually "cancelling", then "cancelled"
        task = _settle(client, args.task_id)
        document: dict[str, Any] = {"cancelled": args.task_id, "task": task.to_dict()}
        text = f"cancelled {args.task_id} (now {task.state})"
        if task.status_message:
            text += f": {task.status_message}"
        emit(args, document, text)
        return 0


def _already_ended(client: Any, task_id: str) -> ConversionTask | None:
    """The task when it exists and has ended (completed or cancelled), else None."""
    try:
        task = ec2.describe_task(client, task_id)
    except ManifestkitError:
        return None
    return task if task.is_final else None


def _settle(client: Any, task_id: str, *, tries: int = 4, pause: float = 0.25) -> ConversionTask:
    task = ec2.describe_task(client, task_id)
    for _ in range(tries):
        if task.is_final:
            break
        time.sleep(pause)
        task = ec2.describe_task(client, task_id)
    return task
