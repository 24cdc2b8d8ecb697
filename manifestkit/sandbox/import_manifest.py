"""What the sandbox importer reads from a fetched manifest, streamed from a file (never in memory).

The full check (XSD + semantic rules) belongs to ``manifestkit.manifest``; when that module offers
``validate_manifest`` the importer calls it first. This reader only pulls out the facts the import
needs and re-checks the rules the import depends on (contiguous ranges covering ``size``, indices
0..n-1, ``count``), so a task never trusts an unchecked range.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lxml import etree


class ManifestProblem(Exception):
    """The manifest is not a usable VM import manifest; the message says why."""


@dataclass(frozen=True)
class ManifestHeader:
    file_format: str
    size: int
    volume_size: int
    part_count: int


@dataclass(frozen=True)
class ManifestPart:
    index: int
    start: int
    #: inclusive
    end: int
    key: str
    head_url: str
    get_url: str

    @property
    def size(self) -> int:
        return self.end - self.start + 1


def _iterparse(path: Path) -> Iterator[tuple[str, etree._Element]]:
    # Entities, DTDs and the network stay off (team rule for every XML parse).
    return etree.iterparse(
        str(path),
        events=("start", "end"),
        resolve_entities=False,
        load_dtd=False,
        no_network=True,
        huge_tree=False,
        remove_comments=True,
    )


def _int(text: str | None, what: str) -> int:
    try:
        value = int((text or "").strip())
    except ValueError:
        raise ManifestProblem(f"{what} is not a whole number: {text!r}") from None
    if value < 0:
        raise ManifestProblem(f"{what} is negative: {value}")
    return value


def read_header(path: Path) -> ManifestHeader:
    """``file-format``, ``import/size``, ``import/volume-size`` and ``parts/@count``."""
    fields: dict[str, str] = {}
    count: int | None = None
    try:
        for event, element in _iterparse(path):
            if event == "start" and element.getparent() is None and element.tag != "manifest":
                raise ManifestProblem(f"root element is <{element.tag}>, not <manifest>")
            if event == "start" and element.tag == "parts":
                count = _int(element.get("count"), "parts/@count")
                break
            if event == "end" and element.tag in ("file-format", "size", "volume-size"):
                fields[element.tag] = (element.text or "").strip()
    except etree.XMLSyntaxError as exc:
        raise ManifestProblem(f"not well-formed XML: {exc}") from None
    for name in ("file-format", "size", "volume-size"):
        if name not in fields:
            raise ManifestProblem(f"<{name}> is missing")
    if count is None:
        raise ManifestProblem("<parts> is missing")
    return ManifestHeader(
        file_format=fields["file-format"],
        size=_int(fields["size"], "import/size"),
        volume_size=_int(fields["volume-size"], "import/volume-size"),
        part_count=count,
    )


def iter_parts(path: Path, header: ManifestHeader) -> Iterator[ManifestPart]:
    """Each ``part`` in order, checked: indices 0..n-1, ranges contiguous from 0 to ``size - 1``."""
    expected_index = 0
    expected_start = 0
    try:
        for event, element in _iterparse(path):
            if event != "end" or element.tag != "part":
                continue
            part = _part(element)
            # Drop what was read so 100k parts stay flat in memory (lxml keeps finished siblings).
            element.clear()
            while element.getprevious() is not None:
                del element.getparent()[0]
            if part.index != expected_index:
                raise ManifestProblem(
                    f"part index {part.index} where {expected_index} was expected"
                )
            if part.start != expected_start or part.end < part.start:
                raise ManifestProblem(
                    f"part {part.index}: byte-range {part.start}-{part.end} does not continue "
                    f"at byte {expected_start}"
                )
            expected_index += 1
            expected_start = part.end + 1
            yield part
    except etree.XMLSyntaxError as exc:
        raise ManifestProblem(f"not well-formed XML: {exc}") from None
    if expected_index != header.part_count:
        raise ManifestProblem(
            f"parts/@count is {header.part_count} but the manifest lists {expected_index} parts"
        )
    if expected_start != header.size:
        raise ManifestProblem(
            f"the parts cover {expected_start} bytes but import/size is {header.size}"
        )


def _part(element: etree._Element) -> ManifestPart:
    index = _int(element.get("index"), "part/@index")
    byte_range = element.find("byte-range")
    if byte_range is None:
        raise ManifestProblem(f"part {index}: <byte-range> is missing")
    texts: dict[str, str] = {}
    for name in ("key", "head-url", "get-url"):
        child = element.find(name)
        if child is None or not (child.text or "").strip():
            raise ManifestProblem(f"part {index}: <{name}> is missing")
        texts[name] = (child.text or "").strip()
    return ManifestPart(
        index=index,
        start=_int(byte_range.get("start"), f"part {index} byte-range/@start"),
        end=_int(byte_range.get("end"), f"part {index} byte-range/@end"),
        key=texts["key"],
        head_url=texts["head-url"],
        get_url=texts["get-url"],
    )
