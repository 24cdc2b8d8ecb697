"""``UrlPolicy``: only AWS's https S3 endpoints and exactly the configured endpoint are reached."""

from __future__ import annotations

import pytest

from manifestkit.aws import AwsSettings
from manifestkit.s3.url_policy import UrlPolicy, UrlRefused, aws_dns_suffixes, internal_address

SIGNED = "?X-Amz-Signature=" + "0" * 64


def test_aws_partitions_come_from_botocore():
    import botocore.loaders

    data = botocore.loaders.create_loader().load_data("partitions")
    expected = {p["outputs"]["dnsSuffix"] for p in data["partitions"]}
    assert expected <= set(aws_dns_suffixes())
    assert {"amazonaws.com", "amazonaws.com.cn"} <= expected


@pytest.mark.parametrize(
    "url",
    [
        "https://b.s3.us-east-1.amazonaws.com/k",
        "https://s3.cn-north-1.amazonaws.com.cn/b/k",
        "https://b.s3.us-gov-west-1.amazonaws.com/k",
        "https://B.S3.AMAZONAWS.COM./k",  # case and a trailing dot are the same host
    ],
)
def test_aws_https_endpoints_are_allowed(url):
    assert UrlPolicy().problem(url + SIGNED) is None


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://b.s3.amazonaws.com/k", "not https"),
        ("https://169.254.169.254/latest/meta-data/", "instance metadata"),
        ("http://[fd00:ec2::254]/latest/", "instance metadata"),
        ("https://127.0.0.1/k", "IP address"),
        ("https://10.0.0.5/k", "IP address"),
        ("https://amazonaws.com.evil.example/k", "neither an AWS"),
        ("https://evilamazonaws.com/k", "neither an AWS"),
        ("https://b.s3.amazonaws.com@evil.example/k", "neither an AWS"),
        ("ftp://b.s3.amazonaws.com/k", "ftp: URL"),
        ("file:///etc/passwd", "file: URL"),
    ],
)
def test_everything_else_is_refused(url, said):
    reason = UrlPolicy().problem(url)
    assert reason is not None and said in reason
    with pytest.raises(UrlRefused) as caught:
        UrlPolicy().check(url)
    assert caught.value.exit_code == 2


def test_the_configured_endpoint_is_exactly_that_scheme_host_and_port():
    policy = UrlPolicy.from_settings(AwsSettings(s3_endpoint_url="http://127.0.0.1:9000"))
    assert policy.problem("http://127.0.0.1:9000/b/k") is None
    assert policy.problem("http://127.0.0.1:9001/b/k") is not None  # another loopback port
    assert policy.problem("https://127.0.0.1:9000/b/k") is not None  # another scheme
    assert policy.problem("http://localhost:9000/b/k") is not None  # another name
    named = UrlPolicy.from_settings(AwsSettings(s3_endpoint_url="https://minio.example:9000"))
    assert named.problem("https://bucket.minio.example:9000/k") is None  # virtual-hosted
    assert named.problem("https://minio.example.evil:9000/k") is not None


def test_the_environment_and_a_profile_configure_endpoints(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:7000")
    assert UrlPolicy.from_settings(None).problem("http://127.0.0.1:7000/b/k") is None
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert UrlPolicy.from_settings(None).problem("http://127.0.0.1:7000/b/k") is not None
    config = tmp_path / "config"
    config.write_text("[profile local]\nendpoint_url = http://127.0.0.1:7100\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    policy = UrlPolicy.from_settings(AwsSettings(profile="local"))
    assert policy.problem("http://127.0.0.1:7100/b/k") is None
    assert UrlPolicy.from_settings(None).problem("http://127.0.0.1:7100/b/k") is not None


def test_a_name_that_resolves_inside_is_refused_at_connect_time():
    policy = UrlPolicy(aws_suffixes=("example",))
    url = "https://s3.example/b/k"
    assert policy.problem(url) is None
    for address in ("127.0.0.1", "169.254.169.254", "10.1.2.3", "fd00:ec2::254", "::1"):
        assert internal_address(address)
        with pytest.raises(UrlRefused, match=address.replace(".", r"\.")):
            policy.check_peer(url, address)
    policy.check_peer(url, "52.216.1.1")  # a public address: fine
    configured = UrlPolicy().with_endpoint("http://127.0.0.1:9000")
    configured.check_peer("http://127.0.0.1:9000/b/k", "127.0.0.1")  # the user's own


def test_presigned_http_checks_the_address_it_connected_to():
    """A name allowed by the policy that resolves to loopback is refused after connecting, and
    the connection is not kept for a later request."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from manifestkit.s3.presigned_http import PresignedHttp

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        # "localhost" stands for a name under an AWS suffix that DNS points at loopback
        policy = UrlPolicy(aws_suffixes=("localhost",))
        url = f"http://localhost:{port}/b/k"
        object.__setattr__(policy, "problem", lambda u: None)  # only the address check decides
        client = PresignedHttp(policy=policy)
        for _ in range(2):
            with pytest.raises(UrlRefused, match="internal address"):
                client.request("GET", url)
        assert seen == []
    finally:
        server.shutdown()
        server.server_close()
