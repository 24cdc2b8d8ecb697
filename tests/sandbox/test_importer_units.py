"""Pure unit tests of the sandbox import endpoint: request rules, the task state machine, and XML
that botocore's own EC2 parser reads (no server; the HTTP tests are in test_importer_http.py)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import botocore.parsers
import botocore.serialize
import botocore.session
import pytest

from manifestkit.images.info import ImageInfo
from manifestkit.sandbox import import_tasks as tasks
from manifestkit.sandbox.import_requests import (
    Ec2ApiError,
    dry_run_error,
    parse_cancel,
    parse_describe,
    parse_import_instance,
    parse_import_volume,
)
from manifestkit.sandbox.import_worker import ImporterSettings, image_problem
from manifestkit.sandbox.import_xml import (
    cancel_response,
    describe_response,
    error_response,
    task_response,
)
from manifestkit.sizes import GiB

ZONES = {"us-east-1a": "use1-az6", "us-east-1b": "use1-az1"}
NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=timezone.utc)
URL = "http://127.0.0.1:9/b/k/diskmanifest.xml?X-Amz-Signature=abc"

_MODEL = botocore.session.get_session().get_service_model("ec2")


def wire(operation: str, **kwargs: object) -> dict[str, str]:
    """The Query parameters botocore itself sends for ``operation`` (the oracle for names)."""
    serializer = botocore.serialize.create_serializer("ec2")
    body = serializer.serialize_to_request(kwargs, _MODEL.operation_model(operation))["body"]
    return {k: str(v) for k, v in body.items() if k not in ("Action", "Version")}


def parse_reply(operation: str, body: bytes, status: int = 200) -> dict:
    parser = botocore.parsers.create_parser("ec2")
    shape = _MODEL.operation_model(operation).output_shape
    return parser.parse({"body": body, "headers": {}, "status_code": status}, shape)


def disk(**image: object) -> dict:
    base = {"Format": "VMDK", "Bytes": 1000, "ImportManifestUrl": URL}
    base.update(image)
    return base


def instance_params(**overrides: object) -> dict[str, str]:
    kwargs: dict = {
        "Platform": "Windows",
        "DiskImages": [{"Image": disk(), "Volume": {"Size": 1}, "Description": "boot"}],
        "LaunchSpecification": {"InstanceType": "m1.small", "Architecture": "x86_64"},
    }
    kwargs.update(overrides)
    return wire("ImportInstance", **kwargs)


def error_of(call) -> Ec2ApiError:
    with pytest.raises(Ec2ApiError) as info:
        call()
    return info.value


# -- request rules ---------------------------------------------------------------------------


def test_import_instance_reads_every_botocore_parameter() -> None:
    params = wire(
        "ImportInstance",
        Platform="windows",
        Description="my vm",
        DiskImages=[
            {"Image": disk(Format="vhd", Bytes=5), "Volume": {"Size": 3}, "Description": "d0"}
        ],
        LaunchSpecification={
            "Architecture": "i386",
            "GroupNames": ["web", "db"],
            "GroupIds": ["sg-1"],
            "AdditionalInfo": "extra",
            "UserData": {"Data": "aGVsbG8="},
            "InstanceType": "m3.medium",
            "Placement": {"AvailabilityZone": "us-east-1b"},
            "Monitoring": True,
            "SubnetId": "subnet-9",
            "InstanceInitiatedShutdownBehavior": "terminate",
            "PrivateIpAddress": "10.0.0.5",
        },
    )
    request = parse_import_instance(params, ZONES, "us-east-1")
    assert request.platform == "Windows"
    assert request.description == "my vm"
    assert (request.disk.format, request.disk.bytes, request.disk.volume_gib) == ("VHD", 5, 3)
    assert request.disk.manifest_url == URL and request.disk.description == "d0"
    launch = request.launch
    assert launch.architecture == "i386" and launch.instance_type == "m3.medium"
    assert launch.group_names == ("web", "db") and launch.group_ids == ("sg-1",)
    assert launch.user_data == "aGVsbG8=" and launch.additional_info == "extra"
    assert launch.availability_zone == "us-east-1b" and launch.monitoring is True
    assert launch.subnet_id == "subnet-9" and launch.private_ip == "10.0.0.5"
    assert launch.shutdown_behaviour == "terminate"


def test_linux_platform_is_accepted() -> None:
    assert parse_import_instance(
        instance_params(Platform="Linux"), ZONES, "us-east-1"
    ).platform == ("Linux")


@pytest.mark.parametrize(
    ("change", "code", "mentions"),
    [
        ({"Platform": ""}, "MissingParameter", "Platform"),
        ({"Platform": "Solaris"}, "InvalidParameterValue", "Solaris"),
        (
            {"DiskImages": [{"Image": disk(Format="QCOW2"), "Volume": {"Size": 1}}]},
            "InvalidParameterValue",
            "QCOW2",
        ),
        (
            {"DiskImages": [{"Image": disk(Bytes=2 * GiB + 1), "Volume": {"Size": 2}}]},
            "InvalidParameter",
            "Volume.Size",
        ),
        (
            {"DiskImages": [{"Image": disk(), "Volume": {"Size": 0}}]},
            "InvalidParameterValue",
            "Volume.Size",
        ),
        (
            {"DiskImages": [{"Image": disk(ImportManifestUrl="ftp://x/y"), "Volume": {"Size": 1}}]},
            "InvalidParameterValue",
            "ImportManifestUrl",
        ),
        (
            {"DiskImages": [{"Image": disk(), "Volume": {"Size": 1}}] * 2},
            "InvalidParameterValue",
            "single disk image",
        ),
        ({"DiskImages": []}, "MissingParameter", "DiskImage"),
        (
            {"LaunchSpecification": {"Placement": {"AvailabilityZone": "eu-west-1a"}}},
            "InvalidParameterValue",
            "eu-west-1a",
        ),
        (
            {"LaunchSpecification": {"UserData": {"Data": "not base64!"}}},
            "InvalidUserData.Malformed",
            "BASE64",
        ),
        (
            {"LaunchSpecification": {"Architecture": "sparc"}},
            "InvalidParameterValue",
            "sparc",
        ),
    ],
)
def test_import_instance_errors(change: dict, code: str, mentions: str) -> None:
    params = instance_params(**change)
    if change.get("Platform") == "":
        params.pop("Platform", None)
    error = error_of(lambda: parse_import_instance(params, ZONES, "us-east-1"))
    assert (error.code, error.status) == (code, 400)
    assert mentions in error.message


def test_missing_image_fields_are_missing_parameters() -> None:
    for field in ("Format", "Bytes", "ImportManifestUrl"):
        params = instance_params()
        params.pop(f"DiskImage.1.Image.{field}")
        error = error_of(lambda p=params: parse_import_instance(p, ZONES, "us-east-1"))
        assert error.code == "MissingParameter" and field in error.message


def test_import_volume_zone_rules() -> None:
    base = {"Image": disk(Format="raw"), "Volume": {"Size": 1}}
    by_id = parse_import_volume(
        wire("ImportVolume", AvailabilityZoneId="use1-az1", **base), ZONES, "us-east-1"
    )
    assert by_id.availability_zone == "us-east-1b" and by_id.disk.format == "RAW"
    assert (
        error_of(lambda: parse_import_volume(wire("ImportVolume", **base), ZONES, "us-east-1")).code
        == "MissingParameter"
    )
    both = wire(
        "ImportVolume", AvailabilityZone="us-east-1a", AvailabilityZoneId="use1-az6", **base
    )
    assert error_of(lambda: parse_import_volume(both, ZONES, "us-east-1")).code == (
        "InvalidParameterCombination"
    )
    elsewhere = wire("ImportVolume", AvailabilityZone="us-west-2a", **base)
    assert error_of(lambda: parse_import_volume(elsewhere, ZONES, "us-east-1")).code == (
        "InvalidParameterValue"
    )


def test_task_id_rules() -> None:
    ids = parse_describe(wire("DescribeConversionTasks", ConversionTaskIds=["import-i-abcd1234"]))
    assert ids == ("import-i-abcd1234",)
    malformed = wire("DescribeConversionTasks", ConversionTaskIds=["i-12345678"])
    assert error_of(lambda: parse_describe(malformed)).code == "InvalidConversionTaskId.Malformed"
    cancel = parse_cancel(
        wire("CancelConversionTask", ConversionTaskId="import-vol-abcd1234", ReasonMessage="oops")
    )
    assert (cancel.task_id, cancel.reason) == ("import-vol-abcd1234", "oops")
    assert error_of(lambda: parse_cancel({})).code == "MissingParameter"


# -- state machine -----------------------------------------------------------------------------


def new_task(
    store: tasks.TaskStore, account: str = "123456789012", request: object = None
) -> tasks.TaskSnapshot:
    """A task for ``request`` (an ImportInstance by default) added to ``store``."""
    if request is None:
        request = parse_import_instance(instance_params(), ZONES, "us-east-1")
    task = tasks.new_snapshot(
        request,
        account_id=account,
        region="us-east-1",
        now=NOW,
        availability_zone="us-east-1a",
        availability_zone_id="use1-az6",
    )
    store.add(task)
    return task


def test_new_task_is_active_and_expires_in_seven_days() -> None:
    task = new_task(tasks.TaskStore())
    assert task.state == "active" and task.task_id.startswith("import-i-")
    assert task.expiration - task.created == timedelta(days=7)


def test_sixth_active_task_is_refused_per_account() -> None:
    store = tasks.TaskStore()
    first = new_task(store)
    for _ in range(4):
        new_task(store)
    assert error_of(lambda: new_task(store)).code == "ResourceLimitExceeded"
    new_task(store, account="210987654321")  # another account has its own limit
    store.update(first.task_id, tasks.service_cancelled("bad"))
    new_task(store)  # a finished task frees a slot


def test_cancel_goes_through_cancelling_and_keeps_the_reason() -> None:
    store = tasks.TaskStore()
    task = new_task(store)
    event = store.cancel_event(task.task_id)
    assert (
        store.update(task.task_id, tasks.cancel_requested("changed my mind")).state == "cancelling"
    )
    assert event.is_set()
    final = store.update(task.task_id, tasks.finish_cancel)
    assert (final.state, final.status_message) == ("cancelled", "changed my mind")
    assert error_of(lambda: store.update(task.task_id, tasks.cancel_requested(""))).code == (
        "IncorrectState"
    )


def test_completed_or_finalizing_task_cannot_be_cancelled() -> None:
    store = tasks.TaskStore()
    task = new_task(store)
    store.update(task.task_id, tasks.begin_final_transfer)
    assert error_of(lambda: store.update(task.task_id, tasks.cancel_requested(""))).code == (
        "IncorrectState"
    )
    done = store.update(task.task_id, tasks.completed("vol-1"))
    assert (done.state, done.status_message, done.volume_id) == ("completed", "", "vol-1")
    assert done.bytes_converted == done.disk.bytes


def test_expiry_by_the_clock() -> None:
    store = tasks.TaskStore()
    task = new_task(store)
    assert (
        store.update(task.task_id, tasks.expire_if_due(NOW + timedelta(days=6))).state == "active"
    )
    expired = store.update(task.task_id, tasks.expire_if_due(task.expiration))
    assert expired.state == "cancelled" and "expired" in expired.status_message


def test_select_filters_and_reports_unknown_ids() -> None:
    store = tasks.TaskStore()
    a, b = new_task(store), new_task(store)
    assert [t.task_id for t in store.select("123456789012", "us-east-1", [b.task_id])] == [
        b.task_id
    ]
    assert {t.task_id for t in store.select("123456789012", "us-east-1")} == {a.task_id, b.task_id}
    assert store.select("123456789012", "eu-west-1") == []
    assert (
        error_of(lambda: store.select("123456789012", "us-east-1", ["import-i-zzzzzzzz"])).code
        == "InvalidConversionTaskId"
    )


# -- XML parsed by botocore --------------------------------------------------------------------


def test_import_instance_reply_parses_with_botocore() -> None:
    store = tasks.TaskStore()
    task = new_task(store)
    task = store.update(task.task_id, lambda t: dataclasses.replace(t, instance_id="i-0123"))
    reply = parse_reply("ImportInstance", task_response("ImportInstance", "2016-11-15", "r1", task))
    conv = reply["ConversionTask"]
    assert conv["ConversionTaskId"] == task.task_id and conv["State"] == "active"
    assert conv["ExpirationTime"] == task.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
    details = conv["ImportInstance"]
    assert details["InstanceId"] == "i-0123" and details["Platform"] == "Windows"
    (volume,) = details["Volumes"]
    assert volume["Image"] == {"Format": "VMDK", "Size": 1000, "ImportManifestUrl": URL}
    assert volume["Volume"] == {"Size": 1, "Id": ""}
    assert volume["BytesConverted"] == 0 and volume["AvailabilityZone"] == "us-east-1a"
    assert volume["Description"] == "boot" and volume["Status"] == "active"


def test_describe_and_volume_reply_parse_with_botocore() -> None:
    store = tasks.TaskStore()
    request = parse_import_volume(
        wire(
            "ImportVolume",
            AvailabilityZone="us-east-1a",
            Image=disk(Format="RAW"),
            Volume={"Size": 1},
            Description="data",
        ),
        ZONES,
        "us-east-1",
    )
    task = new_task(store, account="1", request=request)
    done = store.update(task.task_id, tasks.completed("vol-0abc"))
    reply = parse_reply("DescribeConversionTasks", describe_response("2016-11-15", "r2", [done]))
    (conv,) = reply["ConversionTasks"]
    assert conv["State"] == "completed" and conv["StatusMessage"] == ""
    vol = conv["ImportVolume"]
    assert vol["Volume"] == {"Size": 1, "Id": "vol-0abc"} and vol["BytesConverted"] == 1000
    assert vol["Description"] == "data" and vol["Image"]["Format"] == "RAW"
    assert (
        parse_reply("DescribeConversionTasks", describe_response("2016-11-15", "r", []))[
            "ConversionTasks"
        ]
        == []
    )
    assert (
        parse_reply("CancelConversionTask", cancel_response("2016-11-15", "r3"))[
            "ResponseMetadata"
        ]["RequestId"]
        == "r3"
    )


def test_error_reply_parses_with_botocore() -> None:
    reply = parse_reply("ImportInstance", error_response(dry_run_error(), "r4"), status=412)
    assert reply["Error"]["Code"] == "DryRunOperation"
    assert reply["Error"]["Message"] == "Request would have succeeded, but DryRun flag is set."
    assert reply["ResponseMetadata"]["RequestId"] == "r4"


# -- image verdicts, settings -------------------------------------------------


def info(
    fmt: str, sub: str, importable: bool, problems: tuple[str, ...] = (), capacity: int = 1
) -> ImageInfo:
    return ImageInfo(
        path="x",
        format=fmt,
        subformat=sub,
        file_bytes=1,
        capacity_bytes=capacity,
        importable=importable,
        problems=problems,
    )


def test_image_verdicts_speak_like_aws() -> None:
    assert image_problem(info("VMDK", "streamOptimized", True), "VMDK", 1) is None
    assert "File uses unsupported compression algorithm 0" in image_problem(
        info("VMDK", "monolithicSparse", False, ("convert it",)), "VMDK", 1
    )
    assert "Footers not identical" in image_problem(
        info("VHD", "dynamic", False, ("the footer copy at offset 0 differs from the footer",)),
        "VHD",
        1,
    )
    assert "not VMDK" in image_problem(info("RAW", "raw", True), "VMDK", 1)
    assert "does not fit" in image_problem(info("RAW", "raw", True, capacity=GiB + 1), "RAW", 1)


def test_settings_from_env() -> None:
    settings = ImporterSettings.from_env(
        {"MANIFESTKIT_SANDBOX_PART_WAIT": "1.5", "MANIFESTKIT_SANDBOX_PART_DELAY": "0.2"}
    )
    assert (settings.part_wait, settings.part_delay) == (1.5, 0.2)
    assert ImporterSettings.from_env({}).part_wait is None
    with pytest.raises(ValueError):
        ImporterSettings.from_env({"MANIFESTKIT_SANDBOX_PART_WAIT": "soon"})
