"""A hostile HTTP server on 127.0.0.1 written for the trust-boundary tests, and manifest crafting.

``Hostile()`` answers each path with a behaviour from ``routes`` (``body``, ``endless``, ``drip``,
``silent``, ``redirect``, ...); any other path answers a plain 404 page. Every request is recorded
(method, path) so tests can assert what reached it, including nothing at all.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from xml.sax.saxutils import escape

from manifestkit.s3.presign import Presigner

Behaviour = Callable[[BaseHTTPRequestHandler], None]


class Hostile:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.routes: dict[str, Behaviour] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                path = self.path.split("?", 1)[0]
                outer.requests.append((self.command, path))
                behaviour = outer.routes.get(path) or outer.routes.get("*") or not_found
                try:
                    behaviour(self)
                except OSError:  # the client hung up on an endless answer: as intended
                    self.close_connection = True

            do_GET = do_HEAD = do_DELETE = do_PUT = _any  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return self.endpoint + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> Hostile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def not_found(h: BaseHTTPRequestHandler) -> None:
    body(b"<html><body>Not Found</body></html>", 404, {"Content-Type": "text/html"})(h)


def body(data: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Behaviour:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        sent = {"Content-Length": str(len(data)), **(headers or {})}
        for name, value in sent.items():
            h.send_header(name, value)
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    return answer


def endless(head: bytes = b"", filler: bytes = b"A" * 65536, status: int = 200) -> Behaviour:
    """``head`` then ``filler`` for ever (no Content-Length; the connection ends the body)."""

    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        if h.command == "HEAD":
            return
        h.wfile.write(head)
        started = time.monotonic()
        while time.monotonic() - started < 60:
            h.wfile.write(filler)

    return answer


def drip(
    head: bytes = b"", every: float = 0.3, length: int = 10**9, slow: bytes = b""
) -> Behaviour:
    """A huge Content-Length, ``head`` at once, then one byte every ``every`` seconds (the bytes
    of ``slow`` first, then spaces)."""

    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        if h.command == "HEAD":
            return
        h.wfile.write(head)
        h.wfile.flush()
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < 60:
            time.sleep(every)
            h.wfile.write(slow[sent : sent + 1] or b" ")
            h.wfile.flush()
            sent += 1

    return answer


def silent(h: BaseHTTPRequestHandler) -> None:
    """Reads the request, never answers."""
    time.sleep(60)
    h.close_connection = True


def redirect(location: str, status: int = 302) -> Behaviour:
    return body(b"", status, {"Location": location})


def signer(endpoint: str, *, days_ago: float = 0, key: str = "testing") -> Presigner:
    now = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days_ago)
    creds = SimpleNamespace(access_key=key, secret_key=key, token=None)
    return Presigner(creds, "us-east-1", endpoint_url=endpoint, addressing_style="path", now=now)


def manifest_xml(
    self_destruct: str,
    parts: list[tuple[str, str, str, str | None]],
    *,
    part_size: int = 1024,
) -> bytes:
    """A manifest document: ``parts`` are (key, head-url, get-url, delete-url) of ``part_size``."""
    rows = []
    for index, (key, head, get, delete) in enumerate(parts):
        start = index * part_size
        rows.append(
            f'<part index="{index}"><byte-range start="{start}" end="{start + part_size - 1}"/>'
            f"<key>{escape(key)}</key><head-url>{escape(head)}</head-url>"
            f"<get-url>{escape(get)}</get-url>"
            + (f"<delete-url>{escape(delete)}</delete-url>" if delete else "")
            + "</part>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<manifest><version>2010-11-15</version>'
        "<file-format>RAW</file-format><importer><name>manifestkit</name><version>0.1.0"
        "</version><release>2010-11-15</release></importer>"
        f"<self-destruct-url>{escape(self_destruct)}</self-destruct-url><import>"
        f"<size>{part_size * len(parts)}</size><volume-size>1</volume-size>"
        f'<parts count="{len(parts)}">' + "".join(rows) + "</parts></import></manifest>\n"
    ).encode()


def upload_like(
    presigner: Presigner, bucket: str, folder: str, name: str, count: int, part_size: int = 1024
) -> bytes:
    """A manifest in manifestkit's layout (``{folder}/{name}.partN``) signed by ``presigner``."""
    parts = []
    for index in range(count):
        key = f"{folder}/{name}.part{index}"
        parts.append(
            (
                key,
                presigner.url("HEAD", bucket, key),
                presigner.url("GET", bucket, key),
                presigner.url("DELETE", bucket, key),
            )
        )
    destruct = presigner.url("DELETE", bucket, f"{folder}/{name}manifest.xml")
    return manifest_xml(destruct, parts, part_size=part_size)
