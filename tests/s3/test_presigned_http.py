"""``PresignedHttp``: keep-alive reuse, stale connections, 5xx retries, streaming reads."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from manifestkit.s3.presigned_http import HttpFailure, PresignedHttp, redact
from manifestkit.s3.url_policy import UrlPolicy

#: these servers run on loopback: configured, as a user's own endpoint would be
LOCAL = UrlPolicy().with_endpoint("http://127.0.0.1:9")


class _Server:
    def __init__(self, handler_body):
        outer = self
        self.requests = 0
        self.connections = 0

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                outer.connections += 1

            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802
                outer.requests += 1
                handler_body(self, outer.requests)

            do_HEAD = do_GET  # noqa: N815

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/bucket/key?X-Amz-Signature=s"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _policy(server):
    return UrlPolicy().with_endpoint(server.url)


def _answer(handler, status, body=b"", close=False):
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)
    handler.close_connection = close


def test_keep_alive_is_reused():
    server = _Server(lambda h, n: _answer(h, 200, b"x" * 10))
    try:
        client = PresignedHttp(policy=_policy(server))
        for _ in range(5):
            answer, body = client.request("GET", server.url, read=lambda r: r.read())
            assert answer.status == 200 and body == b"x" * 10
        assert server.connections == 1
    finally:
        server.close()


def test_a_connection_the_server_closed_is_replaced_without_waiting():
    # the server drops the connection after every answer, without saying so
    server = _Server(lambda h, n: _answer(h, 200, b"ok", close=True))
    try:
        client = PresignedHttp(policy=_policy(server))
        started = time.monotonic()
        for _ in range(4):
            assert client.request("HEAD", server.url)[0].status == 200
        assert time.monotonic() - started < 0.4  # no back-off sleeps
        assert server.requests == 4
    finally:
        server.close()


def test_5xx_is_retried_then_reported():
    server = _Server(lambda h, n: _answer(h, 503 if n < 3 else 200, b"<Code>SlowDown</Code>"))
    try:
        answer, _ = PresignedHttp(policy=_policy(server)).request("HEAD", server.url)
        assert answer.status == 200 and server.requests == 3
    finally:
        server.close()
    server = _Server(lambda h, n: _answer(h, 500, b"<Error><Code>InternalError</Code></Error>"))
    try:
        answer, _ = PresignedHttp(attempts=2, policy=_policy(server)).request("GET", server.url)
        assert answer.status == 500 and answer.error_code == "InternalError"
    finally:
        server.close()


def test_unreachable_server_is_an_http_failure():
    with pytest.raises(HttpFailure, match="failed after 2 attempts") as caught:
        PresignedHttp(attempts=2, timeout=2, policy=LOCAL).request(
            "HEAD", "http://127.0.0.1:9/b/k?X-Amz-Signature=s"
        )
    assert "X-Amz-Signature" not in str(caught.value)  # the URL is redacted


def test_redact_drops_the_query():
    assert (
        redact("https://b.s3.amazonaws.com/k?X-Amz-Signature=abc") == "https://b.s3.amazonaws.com/k"
    )
