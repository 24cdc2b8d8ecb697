"""The streaming parser: round trips, and hostile or foreign input refused with one clear line."""

from __future__ import annotations

import io
import tracemalloc

import pytest
from lxml import etree

from manifestkit.errors import ManifestError
from manifestkit.manifest import iter_manifest, read_manifest, validate_manifest
from manifestkit.parts import PartPlan

from .conftest import build, mutate

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE manifest [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<manifest><version>&xxe;</version></manifest>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<manifest><version>&lol9;</version></manifest>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE manifest SYSTEM "http://127.0.0.1:9/evil.dtd">
<manifest><version>2010-11-15</version></manifest>"""

PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE manifest [<!ENTITY % remote SYSTEM "http://127.0.0.1:9/x.dtd"> %remote;]>
<manifest/>"""


def test_round_trip():
    doc = build(1000, 300)
    header, parts = iter_manifest(doc)
    assert header.version == "2010-11-15" and header.file_format == "RAW"
    assert header.importer.name == "manifestkit"
    assert (header.size, header.volume_size, header.part_count) == (1000, 1, 4)
    parts = list(parts)
    plan = PartPlan(1000, 300, "disk.img", "imports", upload_id="0f0e0d0c-uuid")
    assert [(p.index, p.start, p.end, p.key) for p in parts] == [
        (q.index, q.start, q.end, q.key) for q in plan
    ]
    # and what lxml, an independent reader, finds in the same bytes
    tree = etree.fromstring(doc)
    assert [
        (
            int(e.get("index")),
            int(e.find("byte-range").get("start")),
            int(e.find("byte-range").get("end")),
            e.findtext("key"),
            e.findtext("head-url"),
            e.findtext("get-url"),
            e.findtext("delete-url"),
        )
        for e in tree.iterfind("import/parts/part")
    ] == [(p.index, p.start, p.end, p.key, p.head_url, p.get_url, p.delete_url) for p in parts]
    assert header.self_destruct_url == tree.findtext("self-destruct-url")
    assert all(p.delete_url for p in parts)
    assert "&amp;" not in parts[0].get_url and "&X-Amz-Date=" in parts[0].get_url


def test_sources_path_bytes_and_stream(tmp_path):
    doc = build(100, 30)
    path = tmp_path / "m.xml"
    path.write_bytes(doc)
    for source in (doc, path, str(path), io.BytesIO(doc)):
        header, parts = read_manifest(source)
        assert header.part_count == len(parts) == 4


def test_delete_url_is_optional():
    doc = mutate(
        build(100, 30), lambda root: [p.remove(p.find("delete-url")) for p in root.iter("part")]
    )
    header, parts = read_manifest(doc)
    assert all(p.delete_url is None for p in parts)
    assert [p.rule for p in validate_manifest(doc) if p.severity == "error"] == []


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (XXE, "DOCTYPE"),
        (BILLION_LAUGHS, "DOCTYPE"),
        (EXTERNAL_DTD, "DOCTYPE"),
        (PARAMETER_ENTITY, "DOCTYPE"),
        (b"", "not well-formed"),
        (b"this is not XML", "not well-formed"),
        (b"\x00\x01\x02binary", "not well-formed"),
        (b"<manifest><version>2010-11-15</version>", "not well-formed"),
        (b'<?xml version="1.0"?><html><body/></html>', "not a VM Import Manifest"),
        (b'<manifest xmlns="urn:other"/>', "not a VM Import Manifest"),
    ],
)
def test_bad_documents_refused_with_one_line(doc, words):
    for call in (lambda: list(iter_manifest(doc)[1]), lambda: validate_manifest(doc)):
        with pytest.raises(ManifestError) as info:
            call()
        message = str(info.value)
        assert words in message
        assert "\n" not in message


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda d: d[: d.rindex(b"</part>")], "Premature end of data"),
        (lambda d: d[:-200], "line 41"),
        (lambda d: d[: d.index(b"</key>") + 3], "expected '>'"),
        (lambda d: d + b"junk", "Extra content at the end of the document"),
        (lambda d: d.replace(b"<key>", b"<key>\x01", 1), "invalid Char value 1, line 17"),
        # with entities unresolved libxml2 only says "no element found" here
        (lambda d: d.replace(b"<key>", b"<key>&bogus;", 1), "not well-formed"),
        (lambda d: d.replace(b"</key>", b"</kex>", 1), "tag mismatch"),
        (lambda d: d.replace(b'index="1"', b'index="1" index="1"', 1), "Attribute index redefined"),
    ],
)
def test_broken_manifests_get_libxml2s_own_message(change, words):
    doc = change(build(100, 30))
    for call in (lambda: list(iter_manifest(doc)[1]), lambda: validate_manifest(doc)):
        with pytest.raises(ManifestError, match="not well-formed XML") as info:
            call()
        assert words in str(info.value)


def test_truncated_stream_refused():
    """A stream cannot be re-read for libxml2's message: the truncation is still caught."""
    doc = build(100, 30)
    with pytest.raises(ManifestError, match="ends before </manifest>"):
        list(iter_manifest(io.BytesIO(doc[: doc.rindex(b"</part>")]))[1])


def test_parser_refuses_manifest_without_parts():
    doc = b'<?xml version="1.0"?><manifest><version>2010-11-15</version></manifest>'
    with pytest.raises(ManifestError, match="file-format"):
        iter_manifest(doc)
    problems = validate_manifest(doc)
    assert problems and all(p.rule == "xsd" for p in problems)
    assert "file-format" in problems[0].message


def test_xxe_never_reads_the_file(monkeypatch):
    import builtins

    real_open = builtins.open
    opened = []
    monkeypatch.setattr(
        builtins, "open", lambda f, *a, **k: opened.append(f) or real_open(f, *a, **k)
    )
    with pytest.raises(ManifestError):
        validate_manifest(XXE)
    assert "/etc/passwd" not in map(str, opened)


def test_missing_file():
    with pytest.raises(ManifestError, match="cannot read manifest"):
        iter_manifest("/nonexistent/m.xml")


def test_off_schema_refused_by_parser():
    doc = mutate(build(100, 30), lambda root: root.find("import/parts/part").attrib.pop("index"))
    header, parts = iter_manifest(doc)
    with pytest.raises(ManifestError, match="index"):
        list(parts)


def test_streaming_memory_is_bounded():
    """Parsing 10,000 parts holds about one part, not the ~12 MB document's tree."""
    doc = build(10_000, 1)
    tracemalloc.start()
    try:
        header, parts = iter_manifest(io.BytesIO(doc))
        count = sum(1 for _ in parts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 10_000
    assert peak < 2 * 1024 * 1024, peak
