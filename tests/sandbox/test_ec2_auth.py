"""EC2 on the sandbox port: signed with SigV4 (service ec2), refused in EC2's own error format, and
the import actions routed to the import endpoint hook (``manifestkit.sandbox.importer``)."""

from __future__ import annotations

import sys
import urllib.error
import urllib.request
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from lxml import etree

from manifestkit.sandbox import server


def ec2_client(sandbox: Any, access_key: str, secret_key: str) -> Any:
    return boto3.client(
        "ec2",
        region_name=sandbox.region,
        endpoint_url=sandbox.ec2_endpoint_url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )


def test_signed_ec2_calls_reach_moto(ec2: Any) -> None:
    created = ec2.create_volume(AvailabilityZone="us-east-1a", Size=2)
    volumes = ec2.describe_volumes(VolumeIds=[created["VolumeId"]])["Volumes"]
    assert [volume["Size"] for volume in volumes] == [2]


def test_ec2_and_s3_share_the_port(sandbox: Any) -> None:
    assert sandbox.ec2_endpoint_url == sandbox.s3_endpoint_url


def test_ec2_wrong_secret(sandbox: Any) -> None:
    with pytest.raises(ClientError) as caught:
        ec2_client(sandbox, sandbox.access_key, "not-the-secret").describe_instances()
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_ec2_unknown_key(sandbox: Any) -> None:
    with pytest.raises(ClientError) as caught:
        ec2_client(sandbox, "AKIASTRANGER", "whatever").describe_instances()
    assert caught.value.response["Error"]["Code"] == "AuthFailure"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 401


def test_ec2_unsigned(sandbox: Any) -> None:
    request = urllib.request.Request(
        sandbox.ec2_endpoint_url + "/",
        data=b"Action=DescribeInstances&Version=2016-11-15",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 401
    root = etree.fromstring(caught.value.read(), etree.XMLParser(resolve_entities=False))
    assert root.findtext("Errors/Error/Code") == "AuthFailure"


def test_import_actions_go_to_the_hook(
    sandbox: Any, ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[dict[str, str], Any, Any]] = []

    class FakeImporter:
        @staticmethod
        def handle(environ: dict[str, Any], context: Any) -> Any:
            seen.append((environ[server.ENV_PARAMS], environ[server.ENV_AUTH], context))
            body = (
                b'<DescribeConversionTasksResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
                b"<requestId>r</requestId><conversionTasks/></DescribeConversionTasksResponse>"
            )
            return 200, [("Content-Type", "text/xml")], body

    monkeypatch.setitem(sys.modules, "manifestkit.sandbox.fake_importer", FakeImporter)
    monkeypatch.setattr(server, "IMPORTER_MODULE", "manifestkit.sandbox.fake_importer")
    answer = ec2.describe_conversion_tasks(ConversionTaskIds=["import-i-12345678"])
    assert answer["ConversionTasks"] == []
    ((params, auth, context),) = seen
    assert params["Action"] == "DescribeConversionTasks"
    assert params["ConversionTaskId.1"] == "import-i-12345678"
    assert (auth.access_key, auth.region, auth.service) == ("testing", "us-east-1", "ec2")
    assert context is sandbox.context
    assert context.s3_endpoint_url == sandbox.s3_endpoint_url
    assert context.ec2_backend("us-east-1") is not None
    # other actions never reach the hook
    ec2.describe_instances()
    assert len(seen) == 1


def test_hook_returning_none_falls_through_to_moto(
    ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Decline:
        @staticmethod
        def handle(environ: dict[str, Any], context: Any) -> None:
            return None

    monkeypatch.setitem(sys.modules, "manifestkit.sandbox.decline", Decline)
    monkeypatch.setattr(server, "IMPORTER_MODULE", "manifestkit.sandbox.decline")
    with pytest.raises(ClientError) as caught:
        ec2.cancel_conversion_task(ConversionTaskId="import-i-12345678")
    # moto has no such action: whatever it answers, it is not the hook's 200
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] >= 400


def test_missing_importer_is_not_implemented(ec2: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "IMPORTER_MODULE", "manifestkit.sandbox.no_such_module")
    with pytest.raises(ClientError) as caught:
        ec2.describe_conversion_tasks()
    assert caught.value.response["Error"]["Code"] == "NotImplemented"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501


def test_crashing_importer_is_an_ec2_internal_error(
    ec2: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        @staticmethod
        def handle(environ: dict[str, Any], context: Any) -> None:
            raise RuntimeError("bug")

    monkeypatch.setitem(sys.modules, "manifestkit.sandbox.broken", Broken)
    monkeypatch.setattr(server, "IMPORTER_MODULE", "manifestkit.sandbox.broken")
    with pytest.raises(ClientError) as caught:
        ec2_client_once(ec2).describe_conversion_tasks()
    assert caught.value.response["Error"]["Code"] == "InternalError"


def ec2_client_once(ec2: Any) -> Any:
    return boto3.client(
        "ec2",
        region_name=ec2.meta.region_name,
        endpoint_url=ec2.meta.endpoint_url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
