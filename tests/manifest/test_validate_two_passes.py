"""A large manifest file is validated by two concurrent passes (libxml2's XSD check in a child
process, the semantic rules beside it): the answer must be exactly the one pass's, whatever the
input."""

from __future__ import annotations

import sys

import pytest
from lxml import etree

from manifestkit.errors import ManifestError
from manifestkit.manifest import validate as validate_module
from manifestkit.manifest import validate_manifest
from manifestkit.manifest.parse import XsdCheck, concurrent_path

from .conftest import CREDS, FROZEN, build, mutate
from .test_manifest_parse import BILLION_LAUGHS, EXTERNAL_DTD, PARAMETER_ENTITY, XXE
from .test_manifest_validate import (
    backwards,
    gap,
    key_in_other_folder,
    not_presigned,
    other_bucket,
    parts_of,
    self_destruct_for_a_part,
    short_cover,
    url_of_other_part,
)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the two passes run on Linux only (/proc)"
)


def _answer(path, **kwargs):
    try:
        return validate_manifest(path, **kwargs)
    except ManifestError as exc:
        return f"ManifestError: {exc}"


@pytest.fixture
def both(monkeypatch):
    """validate(path) through the one pass and through the two passes, and what the two
    passes answered themselves (``None``: they handed over to the one pass)."""
    seen: list[object] = []
    two_passes = validate_module._two_passes

    def recording(*args):
        seen.append(result := two_passes(*args))
        return result

    monkeypatch.setattr(validate_module, "_two_passes", recording)

    def run(path, **kwargs):
        monkeypatch.setattr(validate_module, "CONCURRENT_MIN_BYTES", 1 << 62)
        one = _answer(path, **kwargs)
        assert seen == []
        monkeypatch.setattr(validate_module, "CONCURRENT_MIN_BYTES", 0)
        two = _answer(path, **kwargs)
        own = seen.pop() if seen else None  # none: not even tried (no part in the first 64 KiB)
        assert seen == []
        return one, two, own

    return run


def _too_long(root):
    parts_of(root)[1].find("byte-range").set("end", "9" * 30)


def _truncate(doc: bytes) -> bytes:
    return doc[: len(doc) * 2 // 3]


@pytest.mark.parametrize(
    "change",
    [
        None,
        gap,
        backwards,
        short_cover,
        url_of_other_part,
        key_in_other_folder,
        other_bucket,
        not_presigned,
        self_destruct_for_a_part,
    ],
)
def test_valid_xsd_answers_from_the_two_passes(both, tmp_path, change):
    doc = build(3000, 100)
    path = tmp_path / "m.xml"
    path.write_bytes(mutate(doc, change) if change else doc)
    for kwargs in ({}, {"now": FROZEN, "credentials": CREDS}):
        one, two, own = both(path, **kwargs)
        assert own is not None  # answered by the two passes, not handed over
        assert two == one and isinstance(one, list)


@pytest.mark.parametrize(
    "doc",
    [
        mutate(build(3000, 100), lambda r: parts_of(r)[-1].attrib.pop("index")),
        mutate(build(3000, 100), lambda r: parts_of(r)[0].find("get-url").__setattr__("text", "x")),
        mutate(build(3000, 100), lambda r: r.find("version").__setattr__("text", "2011-01-01")),
        mutate(build(3000, 100), lambda r: parts_of(r)[5].append(etree.Element("extra"))),
        mutate(build(3000, 100), _too_long),
        _truncate(build(3000, 100)),
        build(3000, 100).replace(b"</parts>", b"</part>"),
        build(3000, 100).replace(b"<manifest>", b"<other>").replace(b"</manifest>", b"</other>"),
        XXE,
        BILLION_LAUGHS,
        EXTERNAL_DTD,
        PARAMETER_ENTITY,
        b"",
        b"not xml at all",
    ],
)
def test_any_failure_is_the_one_pass_answer(both, tmp_path, doc):
    path = tmp_path / "m.xml"
    path.write_bytes(doc)
    one, two, own = both(path)
    assert own is None  # handed over: the one pass alone orders XSD and rule errors
    assert two == one
    assert isinstance(one, str) or {p.rule for p in one} == {"xsd"}


def test_xsd_check_alone(tmp_path):
    good = tmp_path / "good.xml"
    good.write_bytes(build(3000, 100))
    assert XsdCheck(str(good)).wait() is True
    bad = tmp_path / "bad.xml"
    bad.write_bytes(mutate(build(3000, 100), lambda r: parts_of(r)[-1].attrib.pop("index")))
    check = XsdCheck(str(bad))
    assert check.wait() is False and check.failed
    xxe = tmp_path / "xxe.xml"
    xxe.write_bytes(XXE)
    assert XsdCheck(str(xxe)).wait() is False


def test_xsd_check_imports_nothing_from_the_working_folder(tmp_path, monkeypatch):
    """``python -c`` looks in the working folder first: a manifest's folder may hold files
    anybody wrote; the check must run the real lxml and threading, not theirs."""
    good = tmp_path / "good.xml"
    good.write_bytes(build(3000, 100))
    planted = tmp_path / "planted"
    planted.mkdir()
    marker = tmp_path / "imported"
    for name in ("lxml.py", "threading.py", "time.py"):
        (planted / name).write_text(f"open({str(marker)!r}, 'a').write({name!r})\n")
    monkeypatch.chdir(planted)
    assert XsdCheck(str(good)).wait() is True
    assert not marker.exists()


def test_xsd_check_with_millions_of_errors_stays_bounded(tmp_path):
    """Each XSD error is one log entry in the check's process: a small hostile file with
    millions of them ends it at its memory cap (exit 3), not after a gigabyte."""
    doc = build(3000, 100)
    head = doc[: doc.index(b"<part ")]
    path = tmp_path / "hostile.xml"
    path.write_bytes(head + b"<part/>" * 3_000_000 + b"</parts></import></manifest>")
    check = XsdCheck(str(path))
    assert check.wait() is False
    assert check._proc.returncode == 3


def test_only_plain_files_go_concurrent(tmp_path):
    path = tmp_path / "m.xml"
    path.write_bytes(build())
    assert concurrent_path(path, 0) == str(path)
    assert concurrent_path(path, path.stat().st_size + 1) is None
    assert concurrent_path(str(path).encode(), 0) is None  # bytes are a document, not a path
    assert concurrent_path(tmp_path, 0) is None
    late = tmp_path / "late.xml"  # the first part only after 64 KiB: a hostile header
    late.write_bytes(build().replace(b"<parts ", b'<parts x="' + b"a" * 70_000 + b'" '))
    assert concurrent_path(late, 0) is None
    odd = tmp_path / "a%41.xml"  # libxml2 might unescape %41 and read another file
    odd.write_bytes(build())
    assert concurrent_path(odd, 0) is None


def test_cli_on_a_large_file_says_what_the_one_pass_says(monkeypatch, tmp_path, capsys):
    from manifestkit.cli import main

    path = tmp_path / "big.xml"
    path.write_bytes(mutate(build(80_000, 100), gap))  # 800 parts
    answered = []
    two_passes = validate_module._two_passes
    monkeypatch.setattr(
        validate_module, "_two_passes", lambda *a: answered.append(two_passes(*a)) or answered[-1]
    )
    outputs = []
    for threshold in (1 << 62, validate_module.CONCURRENT_MIN_BYTES):
        monkeypatch.setattr(validate_module, "CONCURRENT_MIN_BYTES", threshold)
        code = main(["validate", "--at", FROZEN.isoformat(), str(path)])
        outputs.append((code, capsys.readouterr().out))
    assert len(answered) == 1 and answered[0]  # the default threshold took the two passes
    assert outputs[0] == outputs[1]
    assert outputs[0][0] == 2 and "[range-contiguous]" in outputs[0][1]
