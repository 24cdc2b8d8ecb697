"""Every remote answer is bounded (issue 10 items 2, 3, 5): ``verify``, ``delete``, ``resume``,
``validate URL`` and ``import --manifest-url`` against a real hostile HTTP server on 127.0.0.1.

The bounds are shrunk (``fast_limits``) so each case takes seconds; the shapes are the real ones:
an endless manifest, a drip, a server that never answers, an endless 500 body, redirects to other
hosts and schemes, URLs aimed at the metadata service and at another loopback port.
"""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from manifestkit.s3 import presigned_http
from manifestkit.s3.presigned_http import Limits

from . import hostile
from .helpers import MiB, random_image, run_cli

FAST = Limits(timeout=1.0, answer_deadline=1.5, speed_limit=2000, speed_time=1.0)


@pytest.fixture(autouse=True)
def fast_limits(monkeypatch, tmp_path):
    monkeypatch.setattr(presigned_http, "DEFAULT_LIMITS", FAST)
    monkeypatch.setattr(presigned_http, "_BACKOFF", 0.05)
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return temp


@pytest.fixture
def server():
    with hostile.Hostile() as running:
        yield running


@pytest.fixture
def other():
    """Another loopback server nobody configured: it must never hear from us."""
    with hostile.Hostile() as running:
        yield running


def _a_manifest(server, count=1):
    return hostile.upload_like(hostile.signer(server.endpoint), "bkt", "up/u1", "disk.raw", count)


def _commands(url, endpoint, image):
    flags = ["--s3-endpoint-url", endpoint]
    return {
        "verify": ["verify", url, *flags],
        "delete": ["delete", url, "--ignore-active-task", "--region", "us-east-1", *flags],
        "resume": ["resume", url, str(image), "--region", "us-east-1", *flags],
        "validate": ["validate", url, *flags],
    }


def _one_line(code, err, expected=1):
    assert code == expected, err
    assert err.startswith("manifestkit: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "X-Amz-Signature" not in err


HOSTILE_MANIFESTS = ["endless", "drip", "silent", "endless-500"]


def _serve(kind, server):
    doc = _a_manifest(server)
    cut = doc.index(b"</part>") + len(b"</part>")
    part = doc[doc.index(b"<part ") : cut]
    return {
        # a real manifest's head, then its part entry again and again
        "endless": hostile.endless(doc[:cut], part * 40),
        "drip": hostile.drip(doc[:200]),
        "silent": hostile.silent,
        "endless-500": hostile.endless(b"<Error><Code>InternalError</Code>", status=500),
    }[kind]


@pytest.mark.parametrize("command", ["verify", "delete", "resume", "validate"])
@pytest.mark.parametrize("kind", HOSTILE_MANIFESTS)
def test_every_command_finishes_against_a_hostile_manifest_server(
    command, kind, server, fast_limits, tmp_path
):
    image = random_image(tmp_path / "disk.raw", 1024)
    server.routes["/bkt/up/u1/disk.rawmanifest.xml"] = _serve(kind, server)
    url = hostile.signer(server.endpoint).url("GET", "bkt", "up/u1/disk.rawmanifest.xml")
    started = time.monotonic()
    code, out, err = run_cli(*_commands(url, server.endpoint, image)[command])
    elapsed = time.monotonic() - started
    _one_line(code, err)
    assert elapsed < 15, elapsed
    assert os.listdir(fast_limits) == []  # no temporary manifest left behind
    # the manifest was asked for, and nothing else (no part, no DELETE)
    assert {path for _, path in server.requests} == {"/bkt/up/u1/disk.rawmanifest.xml"}
    assert {method for method, _ in server.requests} == {"GET"}


def test_content_that_cannot_be_a_manifest_is_refused_at_its_first_bytes(server, fast_limits):
    server.routes["/page"] = hostile.endless(b"<html><body>" + b"x" * 1000)
    code, _, err = run_cli("verify", server.url("/page"), "--s3-endpoint-url", server.endpoint)
    _one_line(code, err, expected=2)
    assert "does not answer with a manifest" in err and "<html><body>" in err
    assert os.listdir(fast_limits) == []


@pytest.mark.parametrize(
    "location",
    ["ftp://127.0.0.1:{port}/m.xml", "file:///etc/passwd", "http://127.0.0.1:{port}/m.xml"],
)
def test_a_redirect_is_never_followed(location, server, other, tmp_path):
    target = location.format(port=other.endpoint.rsplit(":", 1)[1])
    other.routes["*"] = hostile.body(_a_manifest(other))
    server.routes["/m.xml"] = hostile.redirect(target)
    image = random_image(tmp_path / "disk.raw", 1024)
    for argv in (
        *_commands(server.url("/m.xml"), server.endpoint, image).values(),
        [
            "import-volume",
            "-z",
            "us-east-1a",
            "--manifest-url",
            server.url("/m.xml"),
            "--region",
            "us-east-1",
            "--s3-endpoint-url",
            server.endpoint,
        ],
    ):
        code, _, err = run_cli(*argv)
        _one_line(code, err)
        assert "302" in err and "not followed" in err
    assert other.requests == []


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://169.254.169.254",
        "http://[fd00:ec2::254]",
        "http://127.0.0.1:{port}",
        "https://a.b.example",
    ],
)
def test_urls_outside_the_boundary_are_refused_before_any_request(
    endpoint, server, other, tmp_path
):
    """A manifest file whose URLs point at the metadata service, at a loopback port that is not
    the configured endpoint, or at a host outside AWS: exit 2 naming the element, no request."""
    endpoint = endpoint.format(port=other.endpoint.rsplit(":", 1)[1])
    manifest = tmp_path / "m.xml"
    manifest.write_bytes(_a_manifest(hostile.SimpleNamespace(endpoint=endpoint)))
    for argv in (
        ["verify", str(manifest), "--s3-endpoint-url", server.endpoint],
        ["delete", str(manifest), "--ignore-active-task", "--s3-endpoint-url", server.endpoint],
    ):
        code, _, err = run_cli(*argv)
        _one_line(code, err, expected=2)
        assert "self-destruct-url" in err or "head-url" in err, err
    code, out, _ = run_cli("validate", str(manifest), "--s3-endpoint-url", server.endpoint)
    assert code == 2 and "[url-host]" in out and "points elsewhere" in out
    # the manifest URL itself pointing there is refused the same way, before a byte is sent
    url = endpoint + "/bkt/up/u1/disk.rawmanifest.xml?X-Amz-Signature=" + "0" * 64
    code, _, err = run_cli("verify", url, "--s3-endpoint-url", server.endpoint)
    _one_line(code, err, expected=2)
    assert "refusing the URL" in err
    assert other.requests == [] and server.requests == []


def _served_parts(server, data, get):
    doc = _a_manifest(server, count=2)
    server.routes["/bkt/up/u1/disk.rawmanifest.xml"] = hostile.body(doc)
    for index in range(2):
        chunk = data[index * 1024 : (index + 1) * 1024]
        server.routes[f"/bkt/up/u1/disk.raw.part{index}"] = get(index, chunk)


def test_part_answers_out_of_bounds_are_problems_not_hangs(server, tmp_path):
    image = random_image(tmp_path / "disk.raw", 2048, seed=3)
    data = image.read_bytes()

    def get(index, chunk):
        honest = hostile.body(chunk)
        # part 0 never ends; part 1 sends the right bytes, one every 0.3 s
        bad = hostile.endless(b"") if index == 0 else hostile.drip(length=1024, slow=chunk)

        def answer(h):
            (honest if h.command == "HEAD" else bad)(h)

        return answer

    _served_parts(server, data, get)
    url = hostile.signer(server.endpoint).url("GET", "bkt", "up/u1/disk.rawmanifest.xml")
    started = time.monotonic()
    code, out, err = run_cli(
        "verify", url, "--image", str(image), "--s3-endpoint-url", server.endpoint
    )
    assert time.monotonic() - started < 15
    assert code == 1, err
    assert "part 0 (up/u1/disk.raw.part0): content-differs: GET returned more than" in out
    assert "part 1 (up/u1/disk.raw.part1): too-slow:" in out
    assert "Traceback" not in err


def test_a_head_with_a_content_length_that_is_no_number(server, tmp_path):
    image = random_image(tmp_path / "disk.raw", 2048)

    def get(index, chunk):
        return hostile.body(b"", 200, {"Content-Length": "abc"})

    _served_parts(server, image.read_bytes(), get)
    url = hostile.signer(server.endpoint).url("GET", "bkt", "up/u1/disk.rawmanifest.xml")
    code, out, err = run_cli("verify", url, "--s3-endpoint-url", server.endpoint)
    assert code == 1 and err == "", err
    assert out.count("wrong-size: is Content-Length 'abc'") == 2


def test_a_url_that_is_not_presigned_answering_404(server):
    for argv in (
        ["delete", server.url("/plain.xml"), "--ignore-active-task"],
        ["verify", server.url("/plain.xml")],
        ["validate", server.url("/plain.xml")],
    ):
        code, _, err = run_cli(*argv, "--s3-endpoint-url", server.endpoint)
        _one_line(code, err)
        assert "404" in err
    assert {m for m, _ in server.requests} == {"GET"}  # never a DELETE


def test_the_manifest_cap_follows_what_the_manifest_declares(server, fast_limits):
    """A 1-part manifest followed by 10 MB of more parts stops near the declared size."""
    doc = _a_manifest(server)
    cut = doc.index(b"</part>") + len(b"</part>")
    part = doc[doc.index(b"<part ") : cut]
    sent = doc[:cut] + part * (10 * MiB // len(part))
    server.routes["/m.xml"] = hostile.body(sent)
    code, _, err = run_cli("verify", server.url("/m.xml"), "--s3-endpoint-url", server.endpoint)
    _one_line(code, err)
    assert "sends more than the" in err
    declared = int(err.split("sends more than the ")[1].split()[0])
    assert declared < 100_000 < len(sent)


def test_a_part_url_redirecting_elsewhere_is_a_problem_not_a_request_there(server, other, tmp_path):
    image = random_image(tmp_path / "disk.raw", 2048)

    def get(index, chunk):
        return hostile.redirect(other.url(f"/stolen{index}"), 307)

    _served_parts(server, image.read_bytes(), get)
    url = hostile.signer(server.endpoint).url("GET", "bkt", "up/u1/disk.rawmanifest.xml")
    code, out, err = run_cli("verify", url, "--s3-endpoint-url", server.endpoint)
    assert code == 1, err
    assert out.count("http-error: HEAD answers HTTP 307") == 2
    assert other.requests == []


def test_free_space_is_checked_before_the_manifest_is_written(server, monkeypatch, fast_limits):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 1000))
    server.routes["/m.xml"] = hostile.body(_a_manifest(server, count=3))
    code, _, err = run_cli("verify", server.url("/m.xml"), "--s3-endpoint-url", server.endpoint)
    _one_line(code, err)
    assert "not enough free space" in err and "1000 bytes free" in err
    assert os.listdir(fast_limits) == []
