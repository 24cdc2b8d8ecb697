"""Write a VM Import Manifest as a stream: the text of a few hundred parts in memory at a time.

The element order is fixed by the schema (design.md §4). The document is written by hand rather
than through a tree: every value is either a number, a presigned URL (only ``&`` needs escaping)
or a key escaped once, so a 104,858-part manifest costs its presigning time and little more.
"""

from __future__ import annotations

import os
import re
from typing import IO

import manifestkit
from manifestkit.errors import UsageError
from manifestkit.files import atomic_private_file
from manifestkit.images.info import FORMATS
from manifestkit.images.rules import volume_gib_for, volume_needed
from manifestkit.manifest.model import IMPORTER_NAME, IMPORTER_RELEASE, MANIFEST_VERSION
from manifestkit.parts import PartPlan
from manifestkit.s3.presign import Presigner, quote_key

#: EBS volumes (and so ``volume-size``) are at most 16 TiB.
MAX_VOLUME_GIB = 16384
#: parts written per ``out.write`` call
_BATCH = 256
# Characters XML 1.0 cannot carry at all, even escaped (XML 1.0 §2.2 Char production).
_NOT_XML_CHAR = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def escape_text(text: str) -> str:
    """Escape character data (XML 1.0 §2.4): ``&``, ``<`` and ``>`` (``]]>`` safety)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def check_xml_chars(text: str, what: str) -> None:
    if _NOT_XML_CHAR.search(text):
        raise UsageError(
            f"{what} {text!r} contains a control character XML cannot carry",
            fix="rename the file or choose a prefix without control characters",
        )


def check_volume_gib(
    volume_gib: int, *, file_bytes: int, file_format: str, capacity_bytes: int | None = None
) -> None:
    """``volume-size`` holds the disk and the file (``rules.volume_gib_for``), at most 16 TiB."""
    if isinstance(volume_gib, bool) or not isinstance(volume_gib, int) or volume_gib < 1:
        raise UsageError(
            f"volume size {volume_gib!r} GiB is invalid", fix="give a whole number of GiB >= 1"
        )
    if volume_gib > MAX_VOLUME_GIB:
        raise UsageError(
            f"volume size {volume_gib} GiB is above the EBS maximum of {MAX_VOLUME_GIB} GiB",
            fix=f"give --volume-size {MAX_VOLUME_GIB} or less",
        )
    # A RAW image's capacity is its file size; other formats say theirs in their headers. The
    # volume must hold the file too: EC2 is told Image.Bytes = the file size (design.md §2).
    capacity = capacity_bytes
    if capacity is None:
        capacity = file_bytes if file_format == "RAW" else 0
    needed = volume_gib_for(capacity, file_bytes)
    if volume_gib < needed:
        raise UsageError(
            f"volume size {volume_gib} GiB is too small: {volume_needed(capacity, file_bytes)}",
            fix=f"give --volume-size {needed} or more",
        )


def write_manifest(
    out: IO[bytes],
    *,
    plan: PartPlan,
    file_format: str,
    bucket: str,
    presigner: Presigner,
    volume_gib: int,
    capacity_bytes: int | None = None,
    with_delete_urls: bool = True,
) -> None:
    """Write the manifest for ``plan`` to ``out`` (binary), signing every URL with ``presigner``.

    ``volume_gib`` is checked against ``capacity_bytes`` when given (and against the file size
    for RAW, whose capacity it is).
    """
    if file_format not in FORMATS:
        raise UsageError(f"file format {file_format!r} is not one of {', '.join(FORMATS)}")
    check_volume_gib(
        volume_gib,
        file_bytes=plan.file_bytes,
        file_format=file_format,
        capacity_bytes=capacity_bytes,
    )
    check_xml_chars(plan.manifest_key, "object key")
    from manifestkit.s3.bucket_names import validate_bucket_name

    validate_bucket_name(bucket, warn_dots=False)

    self_destruct = presigner.url("DELETE", bucket, plan.manifest_key)
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        "<manifest>\n"
        f"  <version>{MANIFEST_VERSION}</version>\n"
        f"  <file-format>{file_format}</file-format>\n"
        "  <importer>\n"
        f"    <name>{IMPORTER_NAME}</name>\n"
        f"    <version>{escape_text(manifestkit.__version__)}</version>\n"
        f"    <release>{IMPORTER_RELEASE}</release>\n"
        "  </importer>\n"
        f"  <self-destruct-url>{self_destruct.replace('&', '&amp;')}</self-destruct-url>\n"
        "  <import>\n"
        f"    <size>{plan.file_bytes}</size>\n"
        f"    <volume-size>{volume_gib}</volume-size>\n"
        f'    <parts count="{plan.count}">\n'
    )
    out.write(head.encode())

    methods = ("HEAD", "GET", "DELETE") if with_delete_urls else ("HEAD", "GET")
    urls = presigner.urls
    # Part keys differ only in their trailing digits, which need no quoting: quote the rest once.
    stem = f"{plan.key_prefix}{plan.basename}.part"
    quoted_stem = quote_key(stem)
    chunk: list[str] = []
    for part in plan:
        if not part.key.startswith(stem):  # PartPlan's naming changed: quote each key
            quoted_stem, stem = None, ""
        quoted = f"{quoted_stem}{part.index}" if quoted_stem is not None else None
        signed = urls(methods, bucket, part.key, quoted_key=quoted)
        delete = (
            f"        <delete-url>{signed[2].replace('&', '&amp;')}</delete-url>\n"
            if with_delete_urls
            else ""
        )
        chunk.append(
            f'      <part index="{part.index}">\n'
            f'        <byte-range start="{part.start}" end="{part.end}"/>\n'
            f"        <key>{escape_text(part.key)}</key>\n"
            f"        <head-url>{signed[0].replace('&', '&amp;')}</head-url>\n"
            f"        <get-url>{signed[1].replace('&', '&amp;')}</get-url>\n"
            f"{delete}"
            "      </part>\n"
        )
        if len(chunk) >= _BATCH:
            out.write("".join(chunk).encode())
            chunk.clear()
    chunk.append("    </parts>\n  </import>\n</manifest>\n")
    out.write("".join(chunk).encode())


def build_manifest_file(
    path: str | os.PathLike[str],
    *,
    plan: PartPlan,
    file_format: str,
    bucket: str,
    presigner: Presigner,
    volume_gib: int,
    capacity_bytes: int | None = None,
) -> None:
    """Write the manifest to ``path`` atomically (temp file + rename) with mode 0600.

    A reader never sees half a manifest, and an existing file is replaced only once the new one
    is complete; on any error the temp file is removed and ``path`` is untouched.
    """
    with atomic_private_file(path, prefix=".manifest-", buffering=1 << 20) as out:
        write_manifest(
            out,
            plan=plan,
            file_format=file_format,
            bucket=bucket,
            presigner=presigner,
            volume_gib=volume_gib,
            capacity_bytes=capacity_bytes,
        )
