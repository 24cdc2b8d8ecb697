"""The sandbox's notion of "now", which tests move forward to make presigned URLs expire.

The clock is an offset from the real UTC time, so time keeps flowing (background import tasks
advance, waits end) while a test has jumped hours or days ahead. It only decides whether a presigned
URL has expired (and whatever the EC2 import endpoint times with it); request signing by clients
keeps using the real time.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone


def iso_time(moment: datetime) -> str:
    """``2010-12-22T12:01:00Z``: EC2's expirationTime and S3's Expires/ServerTime, with seconds."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _real_utc_now() -> datetime:
    return datetime.now(timezone.utc)


class SandboxClock:
    """Thread-safe adjustable UTC clock: ``now()``, ``advance(s)``, ``set(when)``, ``reset()``."""

    def __init__(self, source: Callable[[], datetime] = _real_utc_now) -> None:
        self._source = source
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The sandbox time, timezone-aware UTC."""
        with self._lock:
            offset = self._offset
        return self._source() + offset

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward (or back, with a negative number); returns the new time."""
        with self._lock:
            self._offset += timedelta(seconds=seconds)
        return self.now()

    def set(self, when: datetime) -> datetime:
        """Make ``now()`` return ``when`` (naive means UTC); time flows on from there."""
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        with self._lock:
            self._offset = when - self._source()
        return self.now()

    def reset(self) -> datetime:
        """Back to the real time."""
        with self._lock:
            self._offset = timedelta(0)
        return self.now()

    @property
    def offset_seconds(self) -> float:
        with self._lock:
            return self._offset.total_seconds()
