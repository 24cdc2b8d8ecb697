"""The importer's HTTP client: real requests to the (loopback) S3 the manifest points at.

Only loopback hosts are contacted (team rule); proxies from the environment are ignored so a
``HTTP_PROXY`` can never route a presigned URL elsewhere. S3 error bodies are read (bounded, safely)
so a status message can quote S3's own code and message, e.g. ``AccessDenied: Request has expired``.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from lxml import etree

from manifestkit.sandbox.import_requests import is_loopback_host

CHUNK = 1024 * 1024
_ERROR_BODY_LIMIT = 64 * 1024
_TIMEOUT = 30.0


class FetchError(Exception):
    """A request that did not answer 2xx; ``status`` 0 means no HTTP answer at all."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}" if status else detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class HeadResult:
    status: int
    content_length: int | None


def _opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _check_host(url: str) -> None:
    host = urlsplit(url).hostname
    if not is_loopback_host(host):
        raise FetchError(0, f"the sandbox only fetches from loopback addresses, not {host!r}")


def _s3_error_detail(error: urllib.error.HTTPError) -> str:
    """``Code: Message`` from an S3 error body, or the HTTP reason when there is none (HEAD)."""
    try:
        body = error.read(_ERROR_BODY_LIMIT)
    except (OSError, http.client.HTTPException):
        body = b""
    if body:
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        try:
            root = etree.fromstring(body, parser)
            code = root.findtext("Code") or ""
            message = root.findtext("Message") or ""
            if code or message:
                return f"{code}: {message}".strip(": ")
        except etree.XMLSyntaxError:
            pass
    return error.reason if isinstance(error.reason, str) else str(error.reason)


class HttpClient:
    def __init__(self, timeout: float = _TIMEOUT) -> None:
        self._opener = _opener()
        self._timeout = timeout

    def head(self, url: str) -> HeadResult:
        """Status and length of a HEAD; 4xx/5xx are answers here, not exceptions."""
        _check_host(url)
        request = urllib.request.Request(url, method="HEAD")
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                length = response.headers.get("Content-Length")
                return HeadResult(response.status, int(length) if length is not None else None)
        except urllib.error.HTTPError as error:
            return HeadResult(error.code, None)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise FetchError(0, f"could not connect: {exc}") from exc

    @contextmanager
    def get(self, url: str) -> Iterator[http.client.HTTPResponse]:
        """An open GET response to stream from; non-2xx raises FetchError with S3's code."""
        _check_host(url)
        try:
            response = self._opener.open(urllib.request.Request(url), timeout=self._timeout)
        except urllib.error.HTTPError as error:
            detail = _s3_error_detail(error)
            error.close()
            raise FetchError(error.code, detail) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise FetchError(0, f"could not connect: {exc}") from exc
        with response:
            yield response
