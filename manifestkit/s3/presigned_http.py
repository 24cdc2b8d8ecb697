"""Plain HTTP against presigned S3 URLs, as the importer does: no credentials, no SDK.

One keep-alive connection per (thread, host), so checking 100,000 parts does not open 100,000
TCP connections. The URL's path and query are sent exactly as signed. Connection failures and
5xx answers are retried a few times on a fresh connection before they count.

Every answer is untrusted (SECURITY.md), so every request is bounded:

* where: each URL passes the ``UrlPolicy`` before a connection is opened, and the address a
  name connected to is checked too; redirects are never followed (http.client does not, and a
  3xx is returned to the caller as the answer it is);
* time: ``Limits.answer_deadline`` from sending the request to having the status and headers
  (a watchdog closes the socket: a header drip cannot stretch it), a socket timeout for every
  read, and a minimum throughput for bodies (curl's ``--speed-limit``/``--speed-time``: fewer
  than ``speed_limit`` bytes/s over ``speed_time`` seconds aborts); a timeout is not retried;
* size: a body is read through ``Body``, which stops at the caller's ``max_bytes``; an error
  body is read up to ``Limits.error_body`` bytes; what a reader leaves is drained only up to
  ``Limits.drain`` bytes, after which the connection is closed instead.
"""

from __future__ import annotations

import datetime as dt
import heapq
import http.client
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from manifestkit.s3.url_policy import UrlPolicy

log = logging.getLogger("manifestkit")

T = TypeVar("T")

TIMEOUT = 60.0
ATTEMPTS = 4
_BACKOFF = 0.5
_CHUNK = 1 << 20


class HttpFailure(Exception):
    """The server could not be reached (or kept failing) after all attempts."""


class TooSlow(HttpFailure):
    """The answer came slower than the deadline or the throughput floor allows."""


class TooLarge(HttpFailure):
    """The body was longer than the caller allows."""


@dataclass(frozen=True)
class Limits:
    """Bounds on one exchange (see the module doc); tests shrink them to run in seconds."""

    #: connecting, and each blocking read
    timeout: float = TIMEOUT
    #: from sending the request to having the whole status line and headers
    answer_deadline: float = TIMEOUT
    #: the body's throughput floor, bytes per second averaged over ``speed_time``
    speed_limit: int = 16 * 1024
    speed_time: float = 30.0
    #: bytes of an error body kept (S3's XML errors are < 1 KiB)
    error_body: int = 8192
    #: bytes read past what a reader took, to keep the connection; more: close it
    drain: int = 64 * 1024


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    #: the first few KiB of an error body (S3's XML error), empty on success
    error_body: bytes = b""

    @property
    def error_code(self) -> str:
        body = self.error_body
        start, end = body.find(b"<Code>"), body.find(b"</Code>")
        return body[start + 6 : end].decode(errors="replace")[:100] if 0 <= start < end else ""

    @property
    def says_expired(self) -> bool:
        # S3: 403 AccessDenied "Request has expired"
        return self.status == 403 and b"expired" in self.error_body.lower()

    @property
    def s3_request_id(self) -> str | None:
        """S3's ``x-amz-request-id`` (every S3 answer has one; a web server's has not)."""
        return self.headers.get("x-amz-request-id")

    def describe_server(self) -> str:
        """Who answered, in a few words, for messages about answers that are not S3's."""
        server = " ".join(str(self.headers.get("Server", "")).split())[:60]
        kind = " ".join(str(self.headers.get("Content-Type", "")).split())[:60]
        bits = [f"HTTP {self.status}"]
        if kind:
            bits.append(kind)
        if server:
            bits.append(f"server {server!r}")
        if self.s3_request_id is None:
            bits.append("no x-amz-request-id")
        return ", ".join(bits)


def content_length(headers: http.client.HTTPMessage) -> int | None:
    """The Content-Length header when it is a plain decimal number (else None, never ValueError)."""
    value = headers.get("Content-Length")
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        return None
    return int(text)


def url_expired(url: str, now: dt.datetime | None = None) -> bool:
    """True when the presigned URL's X-Amz-Date + X-Amz-Expires is past."""
    from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url

    try:
        info = parse_presigned_url(url)
    except PresignedUrlError:
        return False
    return info.is_expired(now or dt.datetime.now(dt.timezone.utc))


def redact(url: str) -> str:
    """The URL without its query (the signature is a bearer token)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.partition("?")[0]
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class _Watchdog:
    """One thread for the whole process that shuts sockets whose deadline passed."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, socket.socket]] = []
        self._cancelled: set[int] = set()
        self._cond = threading.Condition()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, sock: socket.socket, seconds: float) -> int:
        with self._cond:
            ident = next(self._ids)
            heapq.heappush(self._heap, (time.monotonic() + seconds, ident, sock))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="manifestkit-http-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()
            return ident

    def disarm(self, ident: int) -> None:
        with self._cond:
            self._cancelled.add(ident)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] in self._cancelled:
                    self._cancelled.discard(heapq.heappop(self._heap)[1])
                if not self._heap:
                    self._cond.wait()
                    continue
                due, ident, sock = self._heap[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


_WATCHDOG = _Watchdog()


class Body:
    """A response body read in bounded slices at a bounded pace (see ``Limits``)."""

    def __init__(
        self, response: http.client.HTTPResponse, limits: Limits, max_bytes: int | None
    ) -> None:
        self._response = response
        self._limits = limits
        self.max_bytes = max_bytes
        self.received = 0
        self._window_start = time.monotonic()
        self._window_bytes = 0

    @property
    def headers(self) -> http.client.HTTPMessage:
        return self._response.headers

    @property
    def status(self) -> int:
        return self._response.status

    def read1(self, size: int = _CHUNK) -> bytes:
        """Whatever has arrived, up to ``size`` bytes; b"" at the end."""
        response = self._response
        if response.isclosed():
            return b""
        data = response.read1(size)
        if response.length == 0:
            # http.client's read1 never closes a Content-Length body it finished: without this
            # the connection would refuse its next request
            response.close()
        self.received += len(data)
        if self.max_bytes is not None and self.received > self.max_bytes:
            raise TooLarge(f"the body is longer than the {self.max_bytes} bytes expected")
        self._pace(len(data))
        return data

    def _pace(self, got: int) -> None:
        self._window_bytes += got
        elapsed = time.monotonic() - self._window_start
        if elapsed >= self._limits.speed_time:
            if self._window_bytes < self._limits.speed_limit * elapsed:
                raise TooSlow(
                    f"the answer came at {self._window_bytes / elapsed:.0f} bytes/s for "
                    f"{elapsed:.0f} s (the floor is {self._limits.speed_limit} bytes/s)"
                )
            self._window_start, self._window_bytes = time.monotonic(), 0

    def chunks(self, size: int = _CHUNK) -> Iterator[bytes]:
        while True:
            data = self.read1(size)
            if not data:
                return
            yield data

    def read(self, amt: int | None = None) -> bytes:
        """Up to ``amt`` bytes (all, bounded by ``max_bytes``, when None)."""
        out = bytearray()
        while amt is None or len(out) < amt:
            data = self.read1(_CHUNK if amt is None else min(_CHUNK, amt - len(out)))
            if not data:
                break
            out += data
        return bytes(out)


class PresignedHttp:
    def __init__(
        self,
        *,
        timeout: float | None = None,
        attempts: int = ATTEMPTS,
        policy: UrlPolicy | None = None,
        limits: Limits | None = None,
    ) -> None:
        limits = limits or DEFAULT_LIMITS
        if timeout is not None:
            limits = Limits(
                timeout=timeout,
                answer_deadline=timeout,
                speed_limit=limits.speed_limit,
                speed_time=limits.speed_time,
                error_body=limits.error_body,
                drain=limits.drain,
            )
        self.limits = limits
        self.timeout = limits.timeout
        self.attempts = attempts
        self.policy = policy if policy is not None else UrlPolicy.from_settings(None)
        self._local = threading.local()

    def _connection(
        self, url: str, scheme: str, netloc: str, fresh: bool
    ) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = (
            getattr(self._local, "pool", None) or {}
        )
        self._local.pool = pool
        conn = pool.get((scheme, netloc))
        if conn is not None and (fresh or conn.sock is None):
            conn.close()
            conn = None
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(netloc, timeout=self.limits.timeout)
            pool[(scheme, netloc)] = conn
        if conn.sock is None:
            conn.connect()
            peer = conn.sock.getpeername()[0] if conn.sock is not None else ""
            try:
                self.policy.check_peer(url, str(peer))
            except BaseException:
                conn.close()  # never left connected for the next request to reuse
                pool.pop((scheme, netloc), None)
                raise
        return conn

    def request(
        self,
        method: str,
        url: str,
        *,
        read: Callable[[Body], T] | None = None,
        max_bytes: int | None = None,
    ) -> tuple[Answer, T | None]:
        """Send ``method`` to ``url``; on 2xx hand the body to ``read`` (streaming, bounded).

        Raises ``UrlRefused`` (a ``UsageError``) for a URL outside the policy, ``TooSlow`` /
        ``TooLarge`` / ``HttpFailure`` for answers out of bounds or servers out of reach.
        """
        self.policy.check(url)
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        last: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            conn: http.client.HTTPConnection | None = None
            try:
                conn = self._connection(url, parts.scheme, parts.netloc, fresh=attempt > 1)
                reused = bool(getattr(conn, "_manifestkit_used", False))
                conn._manifestkit_used = True  # type: ignore[attr-defined]
                answer, result, keep = self._exchange(conn, method, target, read, max_bytes)
                if not keep:
                    conn.close()
                if answer.status >= 500 and attempt < self.attempts:
                    last = HttpFailure(f"HTTP {answer.status} {answer.error_code}".rstrip())
                else:
                    return answer, result
            except (TooSlow, TooLarge) as exc:
                if conn is not None:
                    conn.close()
                raise type(exc)(f"{method} {redact(url)}: {exc}") from exc
            except TimeoutError as exc:
                if conn is not None:
                    conn.close()
                raise TooSlow(
                    f"{method} {redact(url)}: no answer within {self.limits.timeout:g} s"
                ) from exc
            except (OSError, http.client.HTTPException) as exc:
                if conn is not None:
                    conn.close()
                last = exc
                if getattr(exc, "_manifestkit_deadline", False):
                    raise TooSlow(
                        f"{method} {redact(url)}: no complete answer within "
                        f"{self.limits.answer_deadline:g} s"
                    ) from exc
                if conn is not None and reused and attempt == 1:
                    # a keep-alive connection the server had closed: no reason to wait
                    log.debug("%s %s: stale connection (%s)", method, redact(url), exc)
                    continue
            log.debug("%s %s: attempt %d failed: %s", method, redact(url), attempt, last)
            time.sleep(_BACKOFF * attempt)
        raise HttpFailure(f"{method} {redact(url)} failed after {self.attempts} attempts: {last}")

    def _exchange(
        self,
        conn: http.client.HTTPConnection,
        method: str,
        target: str,
        read: Callable[[Body], T] | None,
        max_bytes: int | None,
    ) -> tuple[Answer, T | None, bool]:
        """One request and its answer; the bool says whether the connection can be reused."""
        assert conn.sock is not None
        sock = conn.sock
        watch = _WATCHDOG.arm(sock, self.limits.answer_deadline)
        started = time.monotonic()
        try:
            conn.request(method, target)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if time.monotonic() - started >= self.limits.answer_deadline:
                exc._manifestkit_deadline = True  # type: ignore[attr-defined]
            raise
        finally:
            _WATCHDOG.disarm(watch)
        if method == "HEAD":
            response.close()  # no body; frees the connection for the next request
            return Answer(response.status, response.headers), None, not response.will_close
        if 200 <= response.status < 300:
            body = Body(response, self.limits, max_bytes)
            result = read(body) if read is not None else None
            keep = _drain(body, self.limits.drain)
            return Answer(response.status, response.headers), result, keep
        errors = Body(response, self.limits, None)
        error_body = errors.read(self.limits.error_body)
        keep = _drain(errors, self.limits.drain)
        return Answer(response.status, response.headers, error_body), None, keep


def _drain(body: Body, limit: int) -> bool:
    """Read what is left of a body, up to ``limit`` bytes, at the body's pace; False when more
    was left (or it came too slowly): the connection is then closed rather than reused."""
    body.max_bytes = None
    left = limit
    try:
        while left > 0:
            data = body.read1(min(left, 1 << 16))
            if not data:
                return not body._response.will_close
            left -= len(data)
    except (HttpFailure, OSError, http.client.HTTPException):
        return False
    return body._response.isclosed() and not body._response.will_close
