"""A fixed pool of worker threads fed through a bounded queue (the s3transfer shape).

The producer (the calling thread) blocks when ``queue_depth`` items are waiting, so a plan of
100,000 parts never turns into 100,000 queued tasks: at most ``workers`` items are being worked on
and ``queue_depth`` more wait. Items are small descriptions (a ``Part``); whatever memory an item
needs is allocated by the worker that handles it, so the pool's memory is bounded by
``workers x (memory of one item)``.

Results are handed back to the calling thread, which runs ``on_result`` itself: callers keep their
bookkeeping (progress, counters, state) single-threaded.

Workers are daemon threads: on Ctrl-C the calling thread sets ``cancel``, waits a short grace
period for in-flight items, and re-raises; requests still on the wire are abandoned with the
process instead of holding the exit hostage (``ThreadPoolExecutor`` joins its threads at exit).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

log = logging.getLogger("manifestkit")

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()
#: how long the calling thread sleeps between checks; also bounds how late Ctrl-C is noticed
_TICK = 0.1
#: how long in-flight items may finish after Ctrl-C before we give up on them
INTERRUPT_GRACE = 2.0


class Cancelled(Exception):
    """Raised inside workers (and by ``check``) once the pool has been told to stop."""


class CancelToken:
    """A stop flag shared by the pool and its workers."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when cancelled meanwhile."""
        return self._event.wait(seconds)


class _Outcome(Generic[T, R]):
    __slots__ = ("item", "result", "error")

    def __init__(self, item: T, result: R | None, error: BaseException | None) -> None:
        self.item = item
        self.result = result
        self.error = error


def run_bounded(
    items: Iterable[T],
    work: Callable[[T], R],
    *,
    workers: int,
    on_result: Callable[[T, R], None] | None = None,
    cancel: CancelToken | None = None,
    queue_depth: int | None = None,
    name: str = "manifestkit",
) -> None:
    """Run ``work(item)`` for every item on ``workers`` threads; raise the first error.

    On the first exception from a worker the pool stops taking items, lets in-flight items finish
    (they see ``cancel`` and stop early), and re-raises that exception. On ``KeyboardInterrupt``
    in the calling thread it does the same with a grace period of ``INTERRUPT_GRACE`` seconds.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    cancel = cancel or CancelToken()
    todo: queue.Queue[object] = queue.Queue(maxsize=queue_depth or 2 * workers)
    done: queue.Queue[_Outcome[T, R]] = queue.Queue()

    def worker() -> None:
        while True:
            item = todo.get()
            if item is _STOP:
                return
            if cancel.cancelled:
                done.put(_Outcome(item, None, Cancelled()))  # type: ignore[arg-type]
                continue
            try:
                result = work(item)  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                done.put(_Outcome(item, None, exc))  # type: ignore[arg-type]
            else:
                done.put(_Outcome(item, result, None))  # type: ignore[arg-type]

    threads = [
        threading.Thread(target=worker, name=f"{name}-{i}", daemon=True) for i in range(workers)
    ]
    for thread in threads:
        thread.start()

    outstanding = 0
    first_error: BaseException | None = None

    def handle(outcome: _Outcome[T, R]) -> None:
        nonlocal first_error
        if outcome.error is not None:
            if first_error is None and not isinstance(outcome.error, Cancelled):
                first_error = outcome.error
                cancel.cancel()
            return
        if on_result is not None and first_error is None:
            on_result(outcome.item, outcome.result)  # type: ignore[arg-type]

    def drain(block: bool) -> None:
        nonlocal outstanding
        while outstanding:
            try:
                outcome = done.get(timeout=_TICK) if block else done.get_nowait()
            except queue.Empty:
                return
            outstanding -= 1
            handle(outcome)
            block = False

    try:
        pending: object = _STOP
        iterator = iter(items)
        exhausted = False
        while True:
            drain(block=False)
            if first_error is not None or cancel.cancelled:
                break
            if exhausted:
                if not outstanding:
                    break
                drain(block=True)
                continue
            if pending is _STOP:
                try:
                    pending = next(iterator)
                except StopIteration:
                    exhausted = True
                    continue
            try:
                todo.put(pending, timeout=_TICK)
            except queue.Full:
                continue
            outstanding += 1
            pending = _STOP
        # Stopping early: what is queued is dropped; in-flight items notice ``cancel``.
        outstanding -= _drop_queued(todo)
        while outstanding:
            drain(block=True)
    except KeyboardInterrupt:
        cancel.cancel()
        outstanding -= _drop_queued(todo)
        deadline = time.monotonic() + INTERRUPT_GRACE
        try:
            while outstanding and time.monotonic() < deadline:
                try:
                    done.get(timeout=_TICK)
                    outstanding -= 1
                except queue.Empty:
                    pass
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: leave now
        raise
    finally:
        for _ in threads:
            try:
                todo.put_nowait(_STOP)
            except queue.Full:
                break
    if first_error is not None:
        raise first_error
    if cancel.cancelled:
        raise Cancelled()


def _drop_queued(todo: queue.Queue[object]) -> int:
    """Empty the queue; returns how many items were dropped."""
    dropped = 0
    while True:
        try:
            todo.get_nowait()
        except queue.Empty:
            return dropped
        dropped += 1
