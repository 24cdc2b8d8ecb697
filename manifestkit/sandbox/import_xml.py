"""EC2 Query-protocol XML answers for the import API, element names as in botocore's ec2 model.

Success: ``<{Action}Response xmlns="http://ec2.amazonaws.com/doc/{version}/"><requestId>...``;
errors: ``<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/></Response>``
(the shape botocore's ec2 parser reads, and what EC2 sends).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from xml.etree import ElementTree as ET

from manifestkit.sandbox.clock import iso_time
from manifestkit.sandbox.import_requests import Ec2ApiError
from manifestkit.sandbox.import_tasks import TaskSnapshot

DEFAULT_VERSION = "2016-11-15"
XML_HEADERS = [("Content-Type", "text/xml;charset=UTF-8")]


def new_request_id() -> str:
    return str(uuid.uuid4())


def _sub(parent: ET.Element, tag: str, text: str | int | None = None) -> ET.Element:
    element = ET.SubElement(parent, tag)
    if text is not None:
        element.text = str(text)
    return element


def _image(parent: ET.Element, task: TaskSnapshot) -> None:
    image = _sub(parent, "image")
    _sub(image, "format", task.disk.format)
    _sub(image, "size", task.disk.bytes)
    _sub(image, "importManifestUrl", task.disk.manifest_url)


def _volume(parent: ET.Element, task: TaskSnapshot) -> None:
    volume = _sub(parent, "volume")
    _sub(volume, "size", task.disk.volume_gib)
    _sub(volume, "id", task.volume_id)


def task_element(task: TaskSnapshot, tag: str) -> ET.Element:
    root = ET.Element(tag)
    _sub(root, "conversionTaskId", task.task_id)
    _sub(root, "expirationTime", iso_time(task.expiration))
    if task.kind == "instance":
        details = _sub(root, "importInstance")
        item = _sub(_sub(details, "volumes"), "item")
        _sub(item, "bytesConverted", task.bytes_converted)
        _sub(item, "availabilityZone", task.availability_zone)
        if task.availability_zone_id:
            _sub(item, "availabilityZoneId", task.availability_zone_id)
        _image(item, task)
        _sub(item, "description", task.disk.description)
        _volume(item, task)
        _sub(item, "status", task.volume_status)
        _sub(item, "statusMessage", task.status_message)
        _sub(details, "instanceId", task.instance_id)
        _sub(details, "platform", task.platform)
        _sub(details, "description", task.description)
    else:
        details = _sub(root, "importVolume")
        _sub(details, "bytesConverted", task.bytes_converted)
        _sub(details, "availabilityZone", task.availability_zone)
        if task.availability_zone_id:
            _sub(details, "availabilityZoneId", task.availability_zone_id)
        _sub(details, "description", task.description)
        _image(details, task)
        _volume(details, task)
    _sub(root, "state", task.state)
    _sub(root, "statusMessage", task.status_message)
    _sub(root, "tagSet")
    return root


def _document(action: str, version: str, request_id: str) -> ET.Element:
    root = ET.Element(
        f"{action}Response",
        {"xmlns": f"http://ec2.amazonaws.com/doc/{version or DEFAULT_VERSION}/"},
    )
    _sub(root, "requestId", request_id)
    return root


def _serialise(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def task_response(action: str, version: str, request_id: str, task: TaskSnapshot) -> bytes:
    """ImportInstance / ImportVolume: ``<conversionTask>``."""
    root = _document(action, version, request_id)
    root.append(task_element(task, "conversionTask"))
    return _serialise(root)


def describe_response(version: str, request_id: str, tasks: Iterable[TaskSnapshot]) -> bytes:
    root = _document("DescribeConversionTasks", version, request_id)
    listing = _sub(root, "conversionTasks")
    for task in tasks:
        listing.append(task_element(task, "item"))
    return _serialise(root)


def cancel_response(version: str, request_id: str) -> bytes:
    root = _document("CancelConversionTask", version, request_id)
    _sub(root, "return", "true")
    return _serialise(root)


def error_response(error: Ec2ApiError, request_id: str) -> bytes:
    root = ET.Element("Response")
    err = _sub(_sub(root, "Errors"), "Error")
    _sub(err, "Code", error.code)
    _sub(err, "Message", error.message)
    _sub(root, "RequestID", request_id)
    return _serialise(root)
