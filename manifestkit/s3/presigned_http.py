"""Plain HTTP against presigned S3 URLs, as the importer does: no credentials, no SDK.

One keep-alive connection per (thread, host), so checking 100,000 parts does not open 100,000
TCP connections. The URL's path and query are sent exactly as signed. Connection failures and
5xx answers are retried a few times on a fresh connection before they count.
"""

from __future__ import annotations

import datetime as dt
import http.client
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

log = logging.getLogger("manifestkit")

T = TypeVar("T")

TIMEOUT = 60.0
ATTEMPTS = 4
_BACKOFF = 0.5


class HttpFailure(Exception):
    """The server could not be reached (or kept failing) after all attempts."""


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
        return body[start + 6 : end].decode(errors="replace") if 0 <= start < end else ""

    @property
    def says_expired(self) -> bool:
        # S3: 403 AccessDenied "Request has expired"
        return self.status == 403 and b"expired" in self.error_body.lower()


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
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class PresignedHttp:
    def __init__(self, *, timeout: float = TIMEOUT, attempts: int = ATTEMPTS) -> None:
        self.timeout = timeout
        self.attempts = attempts
        self._local = threading.local()

    def _connection(self, scheme: str, netloc: str, fresh: bool) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = (
            getattr(self._local, "pool", None) or {}
        )
        self._local.pool = pool
        conn = pool.get((scheme, netloc))
        if conn is not None and fresh:
            conn.close()
            conn = None
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = cls(netloc, timeout=self.timeout)
            pool[(scheme, netloc)] = conn
        return conn

    def request(
        self,
        method: str,
        url: str,
        *,
        read: Callable[[http.client.HTTPResponse], T] | None = None,
    ) -> tuple[Answer, T | None]:
        """Send ``method`` to ``url``; on 2xx hand the response to ``read`` (streaming)."""
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        last: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            conn = self._connection(parts.scheme, parts.netloc, fresh=attempt > 1)
            reused = bool(getattr(conn, "_manifestkit_used", False))
            conn._manifestkit_used = True  # type: ignore[attr-defined]
            try:
                conn.request(method, target)
                response = conn.getresponse()
                if 200 <= response.status < 300:
                    result = read(response) if read is not None and method != "HEAD" else None
                    _drain(response)  # what ``read`` left: keeps the connection usable
                    return Answer(response.status, response.headers), result
                body = response.read(8192) if method != "HEAD" else b""
                _drain(response)
                answer = Answer(response.status, response.headers, body)
                if response.status >= 500 and attempt < self.attempts:
                    last = HttpFailure(f"HTTP {response.status} {answer.error_code}")
                else:
                    return answer, None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                last = exc
                if reused and attempt == 1:
                    # a keep-alive connection the server had closed: no reason to wait
                    log.debug("%s %s: stale connection (%s)", method, redact(url), exc)
                    continue
            log.debug("%s %s: attempt %d failed: %s", method, redact(url), attempt, last)
            time.sleep(_BACKOFF * attempt)
        raise HttpFailure(f"{method} {redact(url)} failed after {self.attempts} attempts: {last}")


def _drain(response: http.client.HTTPResponse) -> None:
    """Read the rest of a response in slices (never a whole part in memory at once)."""
    while response.read(1 << 20):
        pass
