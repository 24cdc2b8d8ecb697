"""SandboxClock arithmetic, and the Sandbox's start/stop and refusal to leave loopback."""

from __future__ import annotations

import socket
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest

from manifestkit.errors import UsageError
from manifestkit.sandbox import Sandbox, SandboxClock

T0 = datetime(2030, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


class FakeTime:
    def __init__(self) -> None:
        self.value = T0

    def __call__(self) -> datetime:
        return self.value


def test_clock_follows_its_source_plus_offset() -> None:
    source = FakeTime()
    clock = SandboxClock(source)
    assert clock.now() == T0
    assert clock.advance(90) == T0 + timedelta(seconds=90)
    source.value = T0 + timedelta(seconds=10)  # real time flows on
    assert clock.now() == T0 + timedelta(seconds=100)
    assert clock.offset_seconds == 90


def test_clock_set_and_reset() -> None:
    source = FakeTime()
    clock = SandboxClock(source)
    target = datetime(2031, 1, 1)  # naive: taken as UTC
    assert clock.set(target) == target.replace(tzinfo=timezone.utc)
    source.value = T0 + timedelta(seconds=5)
    assert clock.now() == target.replace(tzinfo=timezone.utc) + timedelta(seconds=5)
    assert clock.reset() == source.value
    assert clock.advance(-60) == source.value - timedelta(seconds=60)


def test_real_clock_is_utc_aware() -> None:
    now = SandboxClock().now()
    assert now.tzinfo is not None and now.utcoffset() == timedelta(0)


def test_refuses_non_loopback_without_consent() -> None:
    with pytest.raises(UsageError, match="loopback"):
        Sandbox(host="192.0.2.1")


def test_busy_port_is_a_usage_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=str(port)):
            Sandbox(port=port).start()


def test_start_stop_frees_the_port() -> None:
    with Sandbox("eu-west-1") as running:
        port = running.port
        assert running.s3_endpoint_url == f"http://127.0.0.1:{port}"
        assert running.aws_settings().region == "eu-west-1"
        assert running.env()["AWS_ENDPOINT_URL_EC2"] == running.ec2_endpoint_url
        with urllib.request.urlopen(running.control_url + "health", timeout=10) as answer:
            assert answer.status == 200
    assert not running.running
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # nobody listens there any more


def test_settings_hide_the_secret() -> None:
    with Sandbox(secret_key="very-secret") as running:
        assert running.aws_settings().secret_key == "very-secret"
        assert "very-secret" not in repr(running.aws_settings())
        assert "very-secret" not in repr(running)
        assert "very-secret" not in repr(running.context)
