"""The validator: a good manifest passes; each broken rule is named, with the element's path."""

from __future__ import annotations

import datetime as dt
import io
import tracemalloc

import pytest
from botocore.credentials import ReadOnlyCredentials
from lxml import etree

from manifestkit.errors import ManifestError
from manifestkit.manifest import check_manifest, errors_only, validate_manifest

from .conftest import CREDS, FROZEN, build, mutate, presigner

GiB = 1024**3


def rules(problems) -> set[str]:
    return {p.rule for p in errors_only(problems)}


def parts_of(root: etree._Element) -> list[etree._Element]:
    return root.findall("import/parts/part")


def test_valid_manifest_has_no_errors():
    doc = build(1000, 300)
    problems = validate_manifest(doc, credentials=CREDS, now=FROZEN)
    assert errors_only(problems) == []
    assert problems == []  # with credentials nothing is left unverified
    notes = validate_manifest(doc)
    assert [(p.rule, p.severity) for p in notes] == [("method-unverified", "note")]
    check_manifest(doc)


def test_valid_on_custom_endpoint_path_and_virtual():
    assert (
        errors_only(
            validate_manifest(build(100, 30, endpoint="http://127.0.0.1:9000"), credentials=CREDS)
        )
        == []
    )
    virtual = presigner("http://localhost:9000", addressing_style="virtual")
    doc = build(100, 30, signer=virtual)
    assert b"http://my-bucket.localhost:9000/imports/" in doc
    assert errors_only(validate_manifest(doc, credentials=CREDS)) == []


def set_count(root, n):
    root.find("import/parts").set("count", str(n))


def swap_indices(root):
    a, b = parts_of(root)[:2]
    a.set("index", "1")
    b.set("index", "0")


def gap(root):
    parts_of(root)[1].find("byte-range").set("start", "301")


def overlap(root):
    parts_of(root)[1].find("byte-range").set("start", "299")


def short_cover(root):
    root.find("import/size").text = "1001"


def backwards(root):
    parts_of(root)[1].find("byte-range").set("end", "250")


def drop_last_part(root):
    parts = parts_of(root)
    parts[-1].getparent().remove(parts[-1])


def url_of_other_part(root):
    a, b = parts_of(root)[:2]
    a.find("get-url").text = b.find("get-url").text


def other_key_text(root):
    parts_of(root)[2].find("key").text = "imports/0f0e0d0c-uuid/other.part2"


def self_destruct_for_a_part(root):
    root.find("self-destruct-url").text = parts_of(root)[0].find("delete-url").text


def self_destruct_elsewhere(root):
    other = build(100, 30, prefix="elsewhere")
    root.find("self-destruct-url").text = etree.fromstring(other).findtext("self-destruct-url")


def key_in_other_folder(root):
    signer = presigner()
    p = parts_of(root)[1]
    key = "imports/another-folder/disk.img.part1"
    p.find("key").text = key
    for field, method in (("head-url", "HEAD"), ("get-url", "GET"), ("delete-url", "DELETE")):
        p.find(field).text = signer.url(method, "my-bucket", key)


def other_bucket(root):
    signer = presigner()
    p = parts_of(root)[1]
    key = p.findtext("key")
    for field, method in (("head-url", "HEAD"), ("get-url", "GET"), ("delete-url", "DELETE")):
        p.find(field).text = signer.url(method, "other-bucket", key)


def not_presigned(root):
    parts_of(root)[0].find("head-url").text = "https://my-bucket.s3.eu-west-1.amazonaws.com/x"


def volume_too_small_raw(root):
    root.find("import/size").text = str(2 * GiB)


@pytest.mark.parametrize(
    ("change", "rule", "path"),
    [
        (lambda r: set_count(r, 5), "count", "/manifest/import/parts/@count"),
        (lambda r: set_count(r, 3), "count", "/manifest/import/parts/@count"),
        (drop_last_part, "range-cover", "/manifest/import/parts/part[3]/byte-range"),
        (swap_indices, "index-order", "/manifest/import/parts/part[1]"),
        (gap, "range-contiguous", "/manifest/import/parts/part[2]/byte-range"),
        (overlap, "range-contiguous", "/manifest/import/parts/part[2]/byte-range"),
        (short_cover, "range-cover", "/manifest/import/parts/part[4]/byte-range"),
        (backwards, "range-order", "/manifest/import/parts/part[2]/byte-range"),
        (url_of_other_part, "url-key", "/manifest/import/parts/part[1]/get-url"),
        (other_key_text, "url-key", "/manifest/import/parts/part[3]/head-url"),
        (self_destruct_for_a_part, "self-destruct-key", "/manifest/self-destruct-url"),
        (self_destruct_elsewhere, "self-destruct-key", "/manifest/self-destruct-url"),
        (key_in_other_folder, "key-folder", "/manifest/import/parts/part[2]/key"),
        (other_bucket, "url-bucket", "/manifest/import/parts/part[2]/head-url"),
        (not_presigned, "url", "/manifest/import/parts/part[1]/head-url"),
        (volume_too_small_raw, "volume-size", "/manifest/import/volume-size"),
    ],
)
def test_each_semantic_rule(change, rule, path):
    doc = mutate(build(1000, 300), change)
    # the XSD still accepts it: only the semantic check can catch it
    assert not [p for p in validate_manifest(doc) if p.rule == "xsd"]
    problems = errors_only(validate_manifest(doc))
    assert rule in rules(problems), problems
    hit = next(p for p in problems if p.rule == rule)
    assert hit.path == path
    assert "\n" not in str(hit) and path in str(hit) and rule in str(hit)
    with pytest.raises(ManifestError, match="is not a valid manifest"):
        check_manifest(doc)


def test_swapped_methods_need_credentials_to_see():
    def swap(root):
        p = parts_of(root)[1]
        head, get = p.find("head-url"), p.find("get-url")
        head.text, get.text = get.text, head.text

    doc = mutate(build(1000, 300), swap)
    without = validate_manifest(doc)
    assert errors_only(without) == []
    assert any(p.rule == "method-unverified" and p.severity == "note" for p in without)
    problems = errors_only(validate_manifest(doc, credentials=CREDS))
    assert [(p.path, p.rule) for p in problems] == [
        ("/manifest/import/parts/part[2]/head-url", "url-method"),
        ("/manifest/import/parts/part[2]/get-url", "url-method"),
    ]
    assert "signed for GET, but this element needs HEAD" in problems[0].message


def test_wrong_secret_or_altered_url():
    wrong = ReadOnlyCredentials(CREDS.access_key, "another-secret", None)
    problems = errors_only(validate_manifest(build(100, 30), credentials=wrong))
    assert rules(problems) == {"url-signature"}
    other_key = ReadOnlyCredentials("AKIDOTHER", CREDS.secret_key, None)
    notes = validate_manifest(build(100, 30), credentials=other_key)
    assert errors_only(notes) == [] and notes[0].rule == "method-unverified"


def test_expiry_rules():
    doc = build(100, 30)
    assert errors_only(validate_manifest(doc, now=FROZEN + dt.timedelta(days=6))) == []
    expired = errors_only(validate_manifest(doc, now=FROZEN + dt.timedelta(days=7)))
    assert rules(expired) == {"url-expired"}
    assert expired[0].path == "/manifest/self-destruct-url"

    too_long = doc.replace(b"X-Amz-Expires=604800", b"X-Amz-Expires=604801")
    problems = errors_only(validate_manifest(too_long, credentials=CREDS))
    assert "url-expiry-max" in rules(problems)
    assert "url-signature" in rules(problems)  # the signature covered the original expiry


def test_volume_size_against_capacity():
    doc = build(1000, 300, file_format="VMDK", volume_gib=2)
    assert errors_only(validate_manifest(doc, capacity_bytes=2 * GiB)) == []
    problems = errors_only(validate_manifest(doc, capacity_bytes=2 * GiB + 1))
    assert rules(problems) == {"volume-size"} and "3 GiB needed" in problems[0].message


def test_many_problems_are_capped():
    doc = build(200, 1)
    doc = mutate(doc, lambda r: [p.set("index", "7") for p in parts_of(r)])
    problems = validate_manifest(doc)
    index = [p for p in problems if p.rule == "index-order"]
    assert len(index) == 21 and "179 more" in index[-1].message


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda r: parts_of(r)[1].attrib.pop("index"), "index"),
        (lambda r: r.find("import/volume-size").__setattr__("text", "lots"), "volume-size"),
        (lambda r: r.find("version").__setattr__("text", "2011-01-01"), "2010-11-15"),
        (lambda r: r.find("file-format").__setattr__("text", "QCOW2"), "QCOW2"),
        (lambda r: r.remove(r.find("importer")), "importer"),
        (lambda r: parts_of(r)[0].find("byte-range").set("start", "-1"), "start"),
        (lambda r: parts_of(r)[0].append(etree.Element("extra")), "extra"),
        (lambda r: r.find("import").insert(0, r.find("import/volume-size")), "size"),
        (lambda r: parts_of(r)[0].find("get-url").__setattr__("text", "not a url"), "get-url"),
    ],
)
def test_xsd_failures_are_readable(change, words):
    doc = mutate(build(1000, 300), change)
    problems = validate_manifest(doc)
    assert problems and {p.rule for p in problems} == {"xsd"}
    assert words in f"{problems[0].path} {problems[0].message}"
    assert problems[0].path.startswith("/manifest")
    # a stream cannot be re-read by xmlschema: libxml2's own message is reported
    streamed = validate_manifest(io.BytesIO(doc))
    assert streamed and streamed[0].rule == "xsd"


def test_validation_memory_is_bounded():
    doc = build(5_000, 1)  # ~6 MB of XML
    tracemalloc.start()
    try:
        problems = validate_manifest(io.BytesIO(doc), credentials=CREDS)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert problems == []
    assert peak < 1536 * 1024, peak


def test_sigv2_url_from_the_old_tools_is_named_once():
    """A manifest written by the old EC2 API tools carries SigV2 URLs: say so, in one phrase."""

    def sigv2(root: etree._Element) -> None:
        get = parts_of(root)[0].find("get-url")
        get.text = get.text.split("?")[0] + "?AWSAccessKeyId=AKID&Expires=1900000000&Signature=x"

    problems = validate_manifest(mutate(build(), sigv2), now=FROZEN)
    assert errors_only(problems) == []  # a warning since issue 11 item 13: S3 may still take it
    (problem,) = [p for p in problems if p.severity == "warning"]
    assert problem.rule == "url-sigv2" and "SigV2" in problem.message
