"""A small threaded HTTP proxy on 127.0.0.1 between boto3 and the S3 server, for fault injection.

It forwards each request verbatim (the Host header too, so SigV4 signatures stay valid) and, on a
seeded random fraction of requests, instead:

* ``reset``: reads half the body, then closes the socket with SO_LINGER 0 (a TCP RST);
* ``500`` / ``503``: answers S3's ``InternalError`` / ``SlowDown`` without forwarding;
* ``answer(method, path)`` returning ``(status, code)``: that S3 error, for chosen requests.

``delay`` sleeps before each forward (a slow server). Every request is recorded (method, path,
query, copy source, body bytes, what happened), so tests can count PUTs, CopyObjects and bytes.
"""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "expect", "upgrade"}
_ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
}


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: str
    copy_source: str | None
    body_bytes: int
    #: "ok" (forwarded), "reset", "500", "503"
    outcome: str
    status: int


class FaultProxy:
    def __init__(
        self,
        upstream: str,
        *,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = ("reset", "500", "503"),
        delay: float = 0.0,
        seed: int = 1234,
        answer: Callable[[str, str], tuple[int, str] | None] | None = None,
    ) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.fault_rate = fault_rate
        self.faults = faults
        self.delay = delay
        #: (method, path) -> (status, S3 error code) to answer instead of forwarding, or None
        self.answer = answer
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self.seen: list[Seen] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                proxy._handle(self)

            do_PUT = do_HEAD = do_DELETE = do_POST = do_GET  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what was seen ------------------------------------------------------------------------

    def reset_counts(self) -> None:
        with self._lock:
            self.seen.clear()

    def requests(self, method: str | None = None, outcome: str | None = "ok") -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method)
                and (outcome is None or s.outcome == outcome)
            ]

    def part_puts(self) -> list[Seen]:
        """Successful PutObject calls that carried a body (not CopyObject) for ``.partN`` keys."""
        return [
            s
            for s in self.requests("PUT")
            if s.copy_source is None and ".part" in s.path and 200 <= s.status < 300
        ]

    def copies(self) -> list[Seen]:
        return [s for s in self.requests("PUT") if s.copy_source is not None and s.status == 200]

    def bytes_in(self) -> int:
        with self._lock:
            return sum(s.body_bytes for s in self.seen)

    # -- forwarding ---------------------------------------------------------------------------

    def _pick_fault(self) -> str | None:
        with self._lock:
            if self.fault_rate and self._random.random() < self.fault_rate:
                return self._random.choice(self.faults)
        return None

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        path, _, query = h.path.partition("?")
        length = int(h.headers.get("Content-Length") or 0)
        copy_source = h.headers.get("x-amz-copy-source")
        fault = self._pick_fault()
        if fault == "reset":
            h.rfile.read(length // 2)
            self._record(Seen(h.command, path, query, copy_source, length // 2, "reset", 0))
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
            return
        body = h.rfile.read(length) if length else b""
        if len(body) < length:  # the client went away mid-body (killed): forward nothing
            self._record(Seen(h.command, path, query, copy_source, len(body), "client-gone", 0))
            h.close_connection = True
            return
        forced = self.answer(h.command, path) if self.answer else None
        if forced is not None:
            fault = "forced"
        if fault in _ERRORS or forced is not None:
            status, code, message = (
                (forced[0], forced[1], "forced by the test") if forced else _ERRORS[fault]
            )
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            ).encode()
            self._record(Seen(h.command, path, query, copy_source, len(body), fault, status))
            h.send_response(status)
            h.send_header("Content-Type", "application/xml")
            h.send_header("Content-Length", str(len(xml) if h.command != "HEAD" else 0))
            h.send_header("Connection", "close")
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(xml)
            h.close_connection = True
            return
        if self.delay:
            time.sleep(self.delay)
        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP}
        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            upstream.request(h.command, h.path, body=body if length else None, headers=headers)
            response = upstream.getresponse()
            payload = response.read()
            status = response.status
            out_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP]
        finally:
            upstream.close()
        self._record(Seen(h.command, path, query, copy_source, len(body), "ok", status))
        h.send_response(status)
        has_length = False
        for k, v in out_headers:
            if k.lower() == "content-length":
                has_length = True
                if h.command != "HEAD":
                    v = str(len(payload))
            h.send_header(k, v)
        if not has_length:
            h.send_header("Content-Length", str(len(payload)))
        h.end_headers()
        if h.command != "HEAD" and payload:
            h.wfile.write(payload)
