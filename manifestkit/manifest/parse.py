"""Read a manifest safely and as a stream: one part in memory at a time.

Hostile XML is refused before anything is interpreted: lxml runs with entity resolution, DTD
loading and network access off and without ``huge_tree``; a document with any DOCTYPE (internal
subset, entity declarations, external DTD) is refused outright — a manifest never has one.
"""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import IO, Union

from lxml import etree

from manifestkit.errors import ManifestError
from manifestkit.manifest.model import Importer, ManifestHeader, ManifestPart, schema_path

#: A path, the document's bytes, or a binary file object.
Source = Union[str, "os.PathLike[str]", bytes, IO[bytes]]

_PART_FIELDS = ("key", "head-url", "get-url", "delete-url")
_HEADER_TEXT = {
    "/manifest/version",
    "/manifest/file-format",
    "/manifest/importer/name",
    "/manifest/importer/version",
    "/manifest/importer/release",
    "/manifest/self-destruct-url",
    "/manifest/import/size",
    "/manifest/import/volume-size",
}


@lru_cache(maxsize=1)
def lxml_schema() -> etree.XMLSchema:
    """The XSD compiled once for lxml (libxml2 validates while it parses: streaming, in C)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(schema_path()), parser))


#: The XSD check alone, run by ``XsdCheck`` as ``python -c`` (lxml only: no manifestkit import).
#: A parser target that asks for no event makes lxml install no SAX callback, so libxml2 parses
#: and validates in C with no Python per element; DOCTYPE stops it before any internal subset,
#: as ``ManifestEvents`` refuses one. Such a parse does not raise on XSD errors, it logs them,
#: one entry each (a hostile file of 20 MB logged 6 million, 1.1 GB), so a watchdog thread
#: ends the process (exit 3) once its resident memory grew by ``cap`` bytes. (RLIMIT_AS does
#: not do: lxml swallows the MemoryError in its error callback and libxml2 goes on.) ``-c``
#: puts the working folder first on ``sys.path``, where anybody's ``lxml.py`` or
#: ``threading.py`` would be imported before the real ones: the script takes it off first.
_XSD_CHILD = """
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # -c puts the working folder first
import os, threading, time
from lxml import etree
xsd, path, cap = sys.argv[1], sys.argv[2], int(sys.argv[3])
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
def watch(limit):
    while True:
        time.sleep(0.02)
        if rss() > limit:
            os._exit(3)
class NoEvents:
    def doctype(self, *_):
        raise ValueError("DOCTYPE")
    def close(self):
        return None
safe = dict(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
schema = etree.XMLSchema(etree.parse(xsd, etree.XMLParser(**safe)))
parser = etree.XMLParser(schema=schema, target=NoEvents(), dtd_validation=False, **safe)
threading.Thread(target=watch, args=(rss() + cap,), daemon=True).start()
try:
    etree.parse(path, parser)
except Exception:
    sys.exit(1)
sys.exit(1 if len(parser.error_log) else 0)
"""
#: what the XSD check may allocate beyond its start (its own RSS is ~18 MiB)
XSD_CHILD_CAP = 64 << 20
_HEAD_BYTES = 64 * 1024
_FIRST_PART = re.compile(rb"<part[\s>/]")


def concurrent_path(source: Source, min_bytes: int) -> str | None:
    """The path libxml2 may open by name for ``XsdCheck``: ``source``'s absolute path when it
    is a regular file of at least ``min_bytes`` whose first ``<part`` lies in its first 64 KiB
    and libxml2 reads that name literally (no ``%`` escape, no URI). A stream or bytes, or a
    system without ``/proc/self/statm`` (the check's memory watchdog reads it): ``None``."""
    if not isinstance(source, (str, os.PathLike)) or not sys.platform.startswith("linux"):
        return None
    if not sys.executable:
        return None
    path = os.path.abspath(os.fspath(source))
    if "%" in path or "://" in path or path.startswith("file:"):
        return None
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size < min_bytes:
            return None
        with open(path, "rb") as f:
            head = f.read(_HEAD_BYTES)
    except (OSError, ValueError):
        return None
    # A manifest's header is well under 4 KiB: a file whose first part does not come within
    # _HEAD_BYTES (a 50 MiB attribute, a huge comment) is not one whose parts two passes
    # speed up, and it would be read twice when it fails; it takes the one pass directly
    return path if _FIRST_PART.search(head) else None


class XsdCheck:
    """libxml2's XSD check of a file alone, in a child process (``_XSD_CHILD``), beside a pass
    in Python over the same file: two cores, no shared GIL, killed when no longer needed.

    It says only *whether* the file is valid (exit 0) or not (anything else: off-schema, not
    well-formed, DOCTYPE, too many errors, no lxml); the caller reads the document again,
    schema plugged in, for what and where.
    """

    def __init__(self, path: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _XSD_CHILD, str(schema_path()), path, str(XSD_CHILD_CAP)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def failed(self) -> bool:
        code = self._proc.poll()
        return code is not None and code != 0

    def wait(self) -> bool:
        """True when the whole file is valid against the XSD."""
        return self._proc.wait() == 0

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()


def source_name(source: Source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, bytes):
        return "<bytes>"
    return str(getattr(source, "name", "<stream>"))


def _open(source: Source) -> tuple[IO[bytes], bool]:
    """A binary file object and whether we opened it (and must close it)."""
    if isinstance(source, (str, os.PathLike)):
        try:
            return open(source, "rb"), True  # noqa: SIM115 - closed by the caller
        except OSError as exc:
            raise ManifestError(
                f"cannot read manifest {os.fspath(source)}: {exc.strerror}",
                fix="check the path and permissions",
            ) from exc
    if isinstance(source, bytes):
        return io.BytesIO(source), True
    return source, False


@dataclass
class RawPart:
    """A part as written, before any checking (fields may be missing or not numbers)."""

    position: int
    index: int | None
    start: int | None
    end: int | None
    fields: dict[str, str]

    def complete(self) -> ManifestPart | None:
        if None in (self.index, self.start, self.end) or not all(
            f in self.fields for f in ("key", "head-url", "get-url")
        ):
            return None
        return ManifestPart(
            index=self.index,  # type: ignore[arg-type]
            start=self.start,  # type: ignore[arg-type]
            end=self.end,  # type: ignore[arg-type]
            key=self.fields["key"],
            head_url=self.fields["head-url"],
            get_url=self.fields["get-url"],
            delete_url=self.fields.get("delete-url"),
        )


#: a manifest number is a byte offset, a size, a count or an index: 2**64 has 20 digits
MAX_DIGITS = 20


class _TooLong(Exception):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits

    def error(self, where: str) -> ManifestError:
        return ManifestError(
            f"{where} has a number of {self.digits} digits; a manifest's numbers have at most "
            f"{MAX_DIGITS} (no disk is that large)",
            fix="give a manifest written by manifestkit or the EC2 tools",
        )


def _int(text: str | None) -> int | None:
    """A manifest number: ASCII digits only (``str.isdigit`` also takes ``²``, which ``int``
    refuses), at most ``MAX_DIGITS`` of them (``int`` of 5,000 digits raises ValueError):
    ``_TooLong``. ``None`` for what is no number at all (the XSD check reports it)."""
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        return None
    if len(text) > MAX_DIGITS:
        raise _TooLong(len(text))
    return int(text)


class ManifestEvents:
    """Walks a manifest once: header values, then ``RawPart``s; the tree is pruned as it goes.

    With ``schema=True`` libxml2 validates against the XSD during the same pass; a violation
    surfaces as ``SchemaViolation`` after the events that preceded it.
    """

    def __init__(self, source: Source, *, schema: bool = True) -> None:
        self.name = source_name(source)
        self._source = source
        self._file, self._owned = _open(source)
        self._schema = schema
        #: text of header elements by path (``/manifest/import/size`` ...)
        self.header: dict[str, str] = {}
        #: ``parts/@count`` as written
        self.count_text: str | None = None
        self._stack: list[str] = []
        self._positions = 0

    @property
    def where(self) -> str:
        """The path of the element being read (for messages when the parser stops)."""
        stack = self._stack
        if len(stack) >= 4 and stack[1:4] == ["import", "parts", "part"]:
            rest = "/".join(stack[4:])
            return f"/manifest/import/parts/part[{self._positions}]" + (f"/{rest}" if rest else "")
        return "/" + "/".join(stack)

    def close(self) -> None:
        if self._owned:
            self._file.close()

    def __iter__(self) -> Iterator[tuple[str, object]]:
        """``("parts", None)`` when ``<parts>`` opens, then ``("part", RawPart)`` for each."""
        context = etree.iterparse(
            self._file,
            events=("start", "end"),
            schema=lxml_schema() if self._schema else None,
            resolve_entities=False,
            no_network=True,
            load_dtd=False,
            dtd_validation=False,
            huge_tree=False,
            remove_comments=True,
            remove_pis=True,
        )
        stack = self._stack
        part_index: str | None = None
        in_part = False
        closed = False
        try:
            for event, elem in context:
                tag = elem.tag
                if event == "start":
                    if not stack:
                        self._check_root(elem)
                    stack.append(tag if isinstance(tag, str) else "?")
                    depth = len(stack)
                    if depth == 4 and tag == "part" and stack[1:3] == ["import", "parts"]:
                        self._positions += 1
                        part_index, in_part = elem.get("index"), True
                    elif depth == 3 and tag == "parts" and stack[1] == "import":
                        self.count_text = elem.get("count")
                        yield "parts", None
                    continue
                # end
                depth = len(stack)
                stack.pop()
                if depth == 5:
                    continue  # a part's children are read at the part's end
                if depth == 4 and in_part:
                    fields: dict[str, str] = {}
                    start = end = None
                    try:
                        for child in elem:  # C iteration over the few children
                            name = child.tag
                            if name == "byte-range":
                                start, end = _int(child.get("start")), _int(child.get("end"))
                            elif name in _PART_FIELDS:
                                fields[name] = (child.text or "").strip()
                        index = _int(part_index)
                    except _TooLong as exc:
                        where = f"{self.name}: /manifest/import/parts/part[{self._positions}]"
                        raise exc.error(where) from None
                    done = RawPart(self._positions, index, start, end, fields)
                    in_part = False
                    # prune: the part and anything before it are no longer needed
                    elem.clear(keep_tail=False)
                    parent = elem.getparent()
                    while elem.getprevious() is not None:
                        del parent[0]
                    yield "part", done
                elif depth <= 3:
                    path = "/" + "/".join([*stack, tag])
                    if path in _HEADER_TEXT:
                        self.header[path] = (elem.text or "").strip()
                    closed = depth == 1
        except etree.XMLSyntaxError as exc:
            # libxml2 schema-validity codes are XML_SCHEMAV_NOROOT..XML_SCHEMAV_MISC (xmlerror.h);
            # exc.error_log is not used: with a shared schema it carries earlier documents' errors
            if etree.ErrorTypes.SCHEMAV_NOROOT <= exc.code <= etree.ErrorTypes.SCHEMAV_MISC:
                raise SchemaViolation(self.where, _message(exc)) from None
            self._not_well_formed(_message(exc))
        finally:
            self.close()
        if not closed:  # libxml2 may end a truncated document without an error (see below)
            self._not_well_formed("the document ends before </manifest> (truncated?)")

    def _not_well_formed(self, message: str) -> None:
        # With a schema plugged in and entities unresolved, libxml2 reports well-formedness
        # errors as "no element found" or not at all (lxml 6.1 / libxml2); a second parse
        # without the schema, only on this error path, recovers its real message and line.
        # Without the schema this parse's own message is that one already.
        precise = _well_formedness_error(self._source) if self._schema else None
        raise ManifestError(
            f"{self.name} is not well-formed XML: {precise or message}",
            fix="give a VM Import Manifest (XML)",
        )

    def _check_root(self, root: etree._Element) -> None:
        docinfo = root.getroottree().docinfo
        if docinfo.doctype or docinfo.internalDTD is not None or docinfo.system_url:
            raise ManifestError(
                f"{self.name} has a DOCTYPE (DTD or entity declarations): refused, a manifest "
                "never has one and entities are how XXE and billion-laughs attacks work",
                fix="use a manifest written by manifestkit or the EC2 tools",
            )
        if root.tag != "manifest":
            tag = root.tag if isinstance(root.tag, str) else "?"
            raise ManifestError(
                f"{self.name} is XML but not a VM Import Manifest: root element <{tag}>, "
                "expected <manifest>",
                fix="give the manifest file (…manifest.xml)",
            )


class SchemaViolation(Exception):
    """libxml2 found an XSD violation; ``where`` is the element the parser had reached."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


_WRAPPED = re.compile(r"""^line \d+: b?(['"])(.*)\1$""")


def _message(exc: etree.XMLSyntaxError) -> str:
    """libxml2's own words, without lxml's ``line N: b'...'`` wrapping."""
    msg = (exc.msg or str(exc)).strip()
    wrapped = _WRAPPED.match(msg)
    return wrapped.group(2) if wrapped else msg


def _well_formedness_error(source: Source) -> str | None:
    """libxml2's message for the first well-formedness error, when the source can be re-read."""
    if not isinstance(source, (str, os.PathLike, bytes)):
        return None
    try:
        data = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    except OSError:
        return None
    with data:
        try:
            for _, elem in etree.iterparse(
                data, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
            ):
                # prune as it goes: the error may lie at the end of a 100k-part manifest
                elem.clear(keep_tail=False)
                parent = elem.getparent()
                if parent is not None:
                    while elem.getprevious() is not None:
                        del parent[0]
        except etree.XMLSyntaxError as exc:
            return _message(exc)  # libxml2's message names line and column
    return None


def header_from(events: ManifestEvents) -> ManifestHeader | None:
    """The header once ``<parts>`` has opened; ``None`` when a value is missing or not a number."""
    h = events.header
    values: list[int | None] = []
    for path, text in (
        ("/manifest/import/size", h.get("/manifest/import/size")),
        ("/manifest/import/volume-size", h.get("/manifest/import/volume-size")),
        ("/manifest/import/parts/@count", events.count_text),
    ):
        try:
            values.append(_int(text))
        except _TooLong as exc:
            raise exc.error(f"{events.name}: {path}") from None
    size, volume, count = values
    needed = ("/manifest/version", "/manifest/file-format", "/manifest/self-destruct-url")
    if size is None or volume is None or count is None or any(p not in h for p in needed):
        return None
    return ManifestHeader(
        version=h["/manifest/version"],
        file_format=h["/manifest/file-format"],
        importer=Importer(
            h.get("/manifest/importer/name", ""),
            h.get("/manifest/importer/version", ""),
            h.get("/manifest/importer/release", ""),
        ),
        self_destruct_url=h["/manifest/self-destruct-url"],
        size=size,
        volume_size=volume,
        part_count=count,
    )


def iter_manifest(source: Source) -> tuple[ManifestHeader, Iterator[ManifestPart]]:
    """Open a manifest: its header now, its parts as a lazy iterator (one part in memory at a time).

    The document is checked against the XSD during the same pass; anything malformed, hostile or
    off-schema raises ``ManifestError`` (from the iterator when it lies among the parts). For
    the semantic rules use ``validate_manifest``.
    """
    events = ManifestEvents(source)
    stream = iter(events)

    def fail(exc: SchemaViolation) -> ManifestError:
        return ManifestError(
            f"{events.name}: {exc.where}: {exc.message}",
            fix="run 'manifestkit validate' on it for every problem",
        )

    try:
        for kind, _ in stream:
            if kind == "parts":
                break
        else:
            raise ManifestError(
                f"{events.name}: no <parts> element", fix="give a complete manifest"
            )
    except SchemaViolation as exc:
        raise fail(exc) from None
    header = header_from(events)
    if header is None:
        events.close()
        raise ManifestError(f"{events.name}: incomplete manifest header before <parts>")

    def parts() -> Iterator[ManifestPart]:
        try:
            for kind, raw in stream:
                if kind == "part":
                    assert isinstance(raw, RawPart)
                    done = raw.complete()
                    if done is None:
                        for _ in stream:  # libxml2 says exactly what is missing, a little later
                            pass
                        raise ManifestError(
                            f"{events.name}: /manifest/import/parts/part[{raw.position}] "
                            "is incomplete"
                        )
                    yield done
        except SchemaViolation as exc:
            raise fail(exc) from None

    return header, parts()


def read_manifest(source: Source) -> tuple[ManifestHeader, list[ManifestPart]]:
    """Everything at once, for small manifests and tests; prefer ``iter_manifest``."""
    header, parts = iter_manifest(source)
    return header, list(parts)
