"""Waiting and watching with an injected clock, against a scripted DescribeConversionTasks."""

from __future__ import annotations

from typing import Any

import botocore.exceptions
import pytest

from manifestkit import ec2
from manifestkit.errors import CredentialsError, RemoteError, TaskFailed, UsageError


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _volume_task(
    task_id: str,
    state: str,
    converted: int,
    *,
    volume_id: str = "",
    message: str = "",
    url: str = "http://127.0.0.1:1/bkt/p/disk.rawmanifest.xml?X-Amz-Signature=1",
    expires: str = "2099-01-01T00:00:00Z",
) -> dict[str, Any]:
    volume: dict[str, Any] = {"Size": 1}
    if volume_id:
        volume["Id"] = volume_id
    return {
        "ConversionTaskId": task_id,
        "State": state,
        "StatusMessage": message,
        "ExpirationTime": expires,
        "ImportVolume": {
            "BytesConverted": converted,
            "AvailabilityZone": "us-east-1a",
            "Image": {"Format": "RAW", "Size": 1000, "ImportManifestUrl": url},
            "Volume": volume,
        },
    }


def _client_error(code: str, message: str = "m") -> botocore.exceptions.ClientError:
    return botocore.exceptions.ClientError({"Error": {"Code": code, "Message": message}}, "X")


class Script:
    """describe_conversion_tasks answering from a list of answers (dicts or exceptions)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    def describe_conversion_tasks(self, **params: Any) -> dict[str, Any]:
        self.calls.append(params)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        tasks = answer if isinstance(answer, list) else [answer]
        wanted = params.get("ConversionTaskIds")
        return {
            "ConversionTasks": [t for t in tasks if not wanted or t["ConversionTaskId"] in wanted]
        }


class Bar:
    def __init__(self) -> None:
        self.total = 0
        self.done = 0
        self.closed = False

    def start(self, total: int, description: str) -> None:
        self.total, self.done = total, 0

    def advance(self, amount: int) -> None:
        self.done += amount

    def close(self) -> None:
        self.closed = True


def _settings(clock: Clock, **kw: Any) -> ec2.WaitSettings:
    return ec2.WaitSettings(interval=5, clock=clock, sleep=clock.sleep, **kw)


def test_wait_follows_bytes_and_waits_for_the_late_volume_id() -> None:
    clock = Clock()
    script = Script(
        [
            _client_error("InvalidConversionTaskId.NotFound"),  # not visible yet
            _volume_task("import-vol-1", "active", 0),
            _volume_task("import-vol-1", "active", 400),
            _volume_task("import-vol-1", "completed", 1000),  # id lags behind the state
            _volume_task("import-vol-1", "completed", 1000, volume_id="vol-9"),
        ]
    )
    bar = Bar()
    updates: list[str] = []
    task = ec2.wait_for_task(
        script,
        "import-vol-1",
        settings=_settings(clock),
        progress=bar,
        on_update=lambda t: updates.append(t.state),
    )
    assert task.succeeded and task.volume_ids == ("vol-9",)
    assert (bar.total, bar.done, bar.closed) == (1000, 1000, True)
    assert updates == ["active", "completed"]
    assert clock.sleeps == [5, 5, 5, 5]


def test_wait_returns_completed_without_volume_id_after_grace() -> None:
    clock = Clock()
    script = Script([_volume_task("import-vol-1", "completed", 1000)])
    task = ec2.wait_for_task(script, "import-vol-1", settings=_settings(clock, volume_id_grace=12))
    assert task.succeeded and task.volume_ids == ()
    assert sum(clock.sleeps) >= 12


def test_service_side_cancellation_is_returned_and_require_success_names_the_cause() -> None:
    clock = Clock()
    script = Script(
        [
            _volume_task("import-vol-1", "active", 0),
            _volume_task("import-vol-1", "cancelled", 0, message="part 3 is missing"),
        ]
    )
    task = ec2.wait_for_task(script, "import-vol-1", settings=_settings(clock))
    assert task.state == "cancelled"
    with pytest.raises(TaskFailed, match="cancelled: part 3 is missing"):
        ec2.require_success(task)


def test_expired_active_task_fails_with_a_clear_message() -> None:
    clock = Clock()
    clock.now = 4102444800.0 + 10  # 2100-01-01T00:00:10Z
    script = Script([_volume_task("import-vol-1", "active", 0, expires="2100-01-01T00:00:00Z")])
    with pytest.raises(TaskFailed, match="expired at 2100-01-01T00:00:00Z"):
        ec2.wait_for_task(script, "import-vol-1", settings=_settings(clock, expiry_grace=0))


def test_unknown_task_is_reported_after_the_visibility_grace() -> None:
    clock = Clock()
    script = Script(
        [_client_error("InvalidConversionTaskId.NotFound", "The task ID does not exist")]
    )
    with pytest.raises(RemoteError, match="import-vol-404 does not exist"):
        ec2.wait_for_task(script, "import-vol-404", settings=_settings(clock, visibility_grace=20))
    assert sum(clock.sleeps) >= 20


def test_timeout() -> None:
    clock = Clock()
    script = Script([_volume_task("import-vol-1", "active", 0)])
    with pytest.raises(TaskFailed, match="still active after 30 s"):
        ec2.wait_for_task(script, "import-vol-1", settings=_settings(clock, timeout=30))


def test_watch_reports_only_changes() -> None:
    clock = Clock()
    a_active = _volume_task("import-vol-a", "active", 10)
    a_more = _volume_task("import-vol-a", "active", 500)
    a_done = _volume_task("import-vol-a", "completed", 1000, volume_id="vol-a")
    b_done = _volume_task("import-vol-b", "cancelled", 0, message="user asked")
    script = Script(
        [[a_active, b_done]] * 1 + [[a_active, b_done], [a_more, b_done], [a_done, b_done]]
    )
    seen: list[tuple[str, str]] = []
    final = ec2.watch_tasks(
        script, [], settings=_settings(clock), on_change=lambda t: seen.append((t.id, t.state))
    )
    # only the active task is watched when none are named; one line per state change
    assert seen == [("import-vol-a", "active"), ("import-vol-a", "completed")]
    assert [t.volume_id for t in final] == ["vol-a"]


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("http://127.0.0.1:1/bkt/p/disk.rawmanifest.xml?X-Amz-Signature=other", "import-vol-1"),
        ("http://127.0.0.1:1/bkt/p/disk.rawmanifest.xml", "import-vol-1"),
        ("https://bkt.s3.us-east-1.amazonaws.com/p/disk.rawmanifest.xml?x=1", "import-vol-1"),
        ("p/disk.rawmanifest.xml", "import-vol-1"),
        ("bkt/p/disk.rawmanifest.xml", "import-vol-1"),
        ("http://127.0.0.1:1/other/p/disk.rawmanifest.xml", None),
        ("p/other.rawmanifest.xml", None),
    ],
)
def test_find_active_task_for_manifest(manifest: str, expected: str | None) -> None:
    script = Script(
        [
            [
                _volume_task("import-vol-1", "active", 0),
                _volume_task(
                    "import-vol-2",
                    "completed",
                    0,
                    url="http://127.0.0.1:1/bkt/p/done.rawmanifest.xml",
                ),
            ]
        ]
    )
    assert ec2.find_active_task_for_manifest(script, manifest) == expected


def test_finished_tasks_never_block_delete() -> None:
    script = Script([[_volume_task("import-vol-1", "cancelled", 0)]])
    assert ec2.find_active_task_for_manifest(script, "bkt/p/disk.rawmanifest.xml") is None


@pytest.mark.parametrize(
    ("code", "leaf", "fragment", "exit_code"),
    [
        ("AuthFailure", CredentialsError, "refused the credentials", 2),
        ("RequestExpired", CredentialsError, "refused the credentials", 2),
        ("UnauthorizedOperation", CredentialsError, "not allowed", 2),
        ("ResourceLimitExceeded", RemoteError, "already have 5 active conversion tasks", 1),
        ("InvalidConversionTaskId.NotFound", RemoteError, "import-i-x does not exist", 1),
        ("InvalidParameterValue", UsageError, "rejected the request", 2),
        ("InvalidConversionTaskId.Malformed", UsageError, "rejected the request", 2),
        ("InternalError", RemoteError, "failed", 1),
    ],
)
def test_error_translation(code: str, leaf: type, fragment: str, exit_code: int) -> None:
    error = ec2.translate_error(_client_error(code), action="ImportInstance", task_id="import-i-x")
    assert type(error) is leaf
    assert fragment in str(error)
    assert error.exit_code == exit_code


def test_limit_message_says_what_to_do() -> None:
    error = ec2.translate_error(_client_error("ResourceLimitExceeded"), action="ImportVolume")
    assert "wait for one or cancel it with manifestkit cancel ID" in str(error)


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("2010-12-22T12:01Z", "2010-12-22T12:01:00+00:00"),
        ("2030-01-02T03:04:05Z", "2030-01-02T03:04:05+00:00"),
        ("2030-01-02T03:04:05.123Z", "2030-01-02T03:04:05.123000+00:00"),
        ("Tue Dec 21 12:01:00 UTC 2010", "2010-12-21T12:01:00+00:00"),
    ],
)
def test_expiration_formats(text: str, iso: str) -> None:
    parsed = ec2.parse_expiration(text)
    assert parsed is not None and parsed.isoformat() == iso


def test_iter_ids_splits_commas() -> None:
    assert ec2.iter_ids(["a,b", " c "]) == ["a", "b", "c"]
