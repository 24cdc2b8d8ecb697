"""Getting hold of a manifest given as a file or as its presigned URL, and reading its layout back.

A URL is fetched the way the importer fetches it: a plain HTTP GET, no credentials, streamed to a
0600 temp file (a manifest for a 1 TiB image is ~150 MB of URLs). When the URL has expired and the
caller can offer an S3 client, the same object is read with an authenticated GetObject instead
(the bucket and key are in the URL, and only a ``...manifest.xml`` key is read that way).

The URL and its answer are untrusted (SECURITY.md): the URL must pass the ``UrlPolicy``, no
redirect is followed, the answer is bounded in time (``PresignedHttp``'s limits) and in size:

* the first bytes must be XML whose root is ``<manifest`` and the ``<parts count="N">`` element
  must come within ``HEAD_LIMIT`` bytes, or the download stops there;
* the size cap is derived from what the manifest declares: ``N`` part entries each at most the
  first entry's length plus ``ENTRY_SLACK`` (entries differ only in digits), plus the header,
  never above ``MAX_MANIFEST_BYTES``;
* ``MAX_MANIFEST_BYTES``, the largest manifest the format allows: an image is under 16 TiB, and
  10 MiB (the EC2 tools' part size) is the smallest part the importer's own tools use, so at most
  ``MAX_PARTS`` = ceil(16 TiB / 10 MiB) = 1,677,722 parts; a part entry as ``upload`` writes it
  (three regional presigned URLs) is ~1,490 bytes (samples/sample-manifest.xml), which makes
  ~2.5 GB; ``ENTRY_CEILING`` = 4 KiB leaves room for a session token in every URL, so the cap is
  1,677,722 x 4 KiB + 64 KiB = ~6.9 GB;
* free space in the temp folder is checked for the cap before writing, and again every 64 MiB.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from manifestkit.errors import ManifestError, ManifestkitError, RemoteError, UsageError
from manifestkit.files import locked_temp_file
from manifestkit.parts import PartPlan
from manifestkit.s3.bucket_checks import owner_args
from manifestkit.s3.errors import translate
from manifestkit.s3.presigned_http import HttpFailure, Limits, PresignedHttp, redact
from manifestkit.s3.url_policy import UrlPolicy

#: the largest image the importer takes, and the smallest part its tools cut (see the module doc)
MAX_IMAGE_BYTES = 16 << 40
MIN_PART_BYTES = 10 << 20
MAX_PARTS = math.ceil(MAX_IMAGE_BYTES / MIN_PART_BYTES)
ENTRY_CEILING = 4096
ENTRY_SLACK = 512
HEAD_LIMIT = 64 * 1024
MAX_MANIFEST_BYTES = MAX_PARTS * ENTRY_CEILING + HEAD_LIMIT
#: free space left to the rest of the system while a manifest is written
FREE_RESERVE = 64 << 20
_FREE_CHECK_EVERY = 64 << 20


class ManifestGone(RemoteError):
    """The manifest URL answers 404: the object was deleted (exit 1)."""

    #: True when S3 said so (an x-amz-request-id and NoSuchKey), not just any web server
    s3_answered = False


class NotAManifest(ManifestError):
    """The URL answered something that cannot be a manifest (exit 2, as for a manifest file)."""


class ManifestTooLarge(RemoteError):
    """The answer went on past anything its manifest can be (exit 1: the remote side is wrong)."""


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _expired_answer(body: bytes) -> bool:
    # S3: 403 AccessDenied "Request has expired" (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html)
    return b"expired" in body.lower()


def _temp_copy() -> tuple[int, str]:
    # mode 0600, locked while we live; copies that killed runs left are removed here
    return locked_temp_file(None, "manifestkit-manifest-", ".xml")


@contextlib.contextmanager
def local_manifest(
    source: str,
    *,
    s3_client: Callable[[], Any] | None = None,
    policy: UrlPolicy | None = None,
    limits: Limits | None = None,
) -> Iterator[str]:
    """A local path holding the manifest ``source`` (a path, or a URL fetched to a temp file).

    The temp file is removed however the block ends (Ctrl-C, and SIGTERM/SIGHUP, which the CLI
    turns into an interrupt).
    """
    if not is_url(source):
        if not os.path.isfile(source):
            raise UsageError(
                f"{source}: no such manifest file", fix="give a manifest file or its URL"
            )
        yield source
        return
    fd, tmp = _temp_copy()
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(source, out, tmp, s3_client, policy, limits)
        yield tmp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _s3_error(body: bytes) -> str:
    """``Code: Message`` of an S3 error document (one line), or the body's start when it is none."""
    code = re.search(rb"<Code>([^<]{1,200})</Code>", body)
    message = re.search(rb"<Message>([^<]{1,400})</Message>", body)
    if code is None:
        return " ".join(body[:200].decode(errors="replace").split())
    text = code.group(1).decode(errors="replace")
    if message is not None:
        text += ": " + message.group(1).decode(errors="replace")
    return " ".join(text.split())


def _check_complete(url: str) -> None:
    """A presigned URL without its signature was cut short, mostly by a shell at an unquoted '&'."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    if "X-Amz-Algorithm" in query and "X-Amz-Signature" not in query:
        raise UsageError(
            "the manifest URL has no X-Amz-Signature: it was cut short (a shell ends an "
            "unquoted URL at the first '&')",
            fix="put the whole URL in single quotes",
        )


_START = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*(?:<\?xml[^>]{0,300}\?>\s*)?(?:<!--.{0,2000}?-->\s*)*<manifest[\s>/]",
    re.S,
)
_COUNT = re.compile(rb"<parts\s+count\s*=\s*[\"']([0-9]{1,9})[\"']")
_FIRST_PART = re.compile(rb"<part[\s>].*?</part>", re.S)


class _ManifestSink:
    """Writes a downloaded manifest to ``out`` and stops as soon as it cannot be one."""

    def __init__(self, out: Any, folder: str, name: str) -> None:
        self.out = out
        self.folder = folder
        self.name = name
        self.head = bytearray()
        self.cap: int | None = None
        self.written = 0
        self._next_free_check = _FREE_CHECK_EVERY

    def write(self, data: bytes) -> None:
        if self.cap is None:
            self.head += data
            self._judge_head(final=False)
            if self.cap is None:
                return
            data, self.head = bytes(self.head), bytearray()
        self.written += len(data)
        if self.written > self.cap:
            raise ManifestTooLarge(
                f"{self.name} sends more than the {self.cap} bytes its manifest can be (it "
                "declares its part count and the first part's length)",
                fix="check the URL; a manifest server should not send an endless body",
            )
        if self.written >= self._next_free_check:
            self._next_free_check += _FREE_CHECK_EVERY
            self._check_free(FREE_RESERVE)
        self.out.write(data)

    def finish(self) -> None:
        if self.cap is None:
            self._judge_head(final=True)
            if self.head:
                data, self.head = bytes(self.head), bytearray()
                self.written += len(data)
                self.out.write(data)

    def _judge_head(self, *, final: bool) -> None:
        head = bytes(self.head)
        if (len(head) >= 512 or final) and not _START.match(head[:4096]):
            start = " ".join(head[:60].decode("utf-8", errors="replace").split())
            raise NotAManifest(
                f"{self.name} does not answer with a manifest (it starts with {start!r})",
                fix="give the presigned GET URL of the manifest that manifestkit upload printed",
            )
        count = _COUNT.search(head)
        first = _FIRST_PART.search(head, count.end()) if count else None
        if count and (first or final or len(head) >= HEAD_LIMIT):
            parts = int(count.group(1))
            if parts > MAX_PARTS:
                raise NotAManifest(
                    f"{self.name} declares {parts} parts; a manifest has at most {MAX_PARTS} "
                    "(16 TiB at 10 MiB parts)",
                    fix="check the URL",
                )
            entry = ENTRY_CEILING
            if first is not None:
                entry = min(ENTRY_CEILING, len(first.group(0)) + ENTRY_SLACK)
            self.cap = min(MAX_MANIFEST_BYTES, count.end() + max(parts, 1) * entry + HEAD_LIMIT)
            self._check_free(self.cap + FREE_RESERVE)
            return
        if len(head) >= HEAD_LIMIT or (final and not count):
            raise NotAManifest(
                f"{self.name} does not answer with a manifest (no <parts count=...> in its "
                f"first {min(len(head), HEAD_LIMIT)} bytes)",
                fix="give the presigned GET URL of the manifest that manifestkit upload printed",
            )

    def _check_free(self, needed: int) -> None:
        free = shutil.disk_usage(self.folder).free
        if free < needed:
            raise ManifestkitError(
                f"not enough free space in {self.folder} for the manifest from {self.name}: "
                f"{free} bytes free, up to {needed} needed",
                fix="free some space, or point TMPDIR at a bigger folder",
            )


def _fetch(
    url: str,
    out: Any,
    tmp: str,
    s3_client: Callable[[], Any] | None,
    policy: UrlPolicy | None,
    limits: Limits | None,
) -> None:
    from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url

    _check_complete(url)
    name = redact(url)
    client = PresignedHttp(policy=policy, limits=limits, attempts=2)
    sink = _ManifestSink(out, os.path.dirname(tmp), name)

    def copy(body: Any) -> None:
        for chunk in body.chunks(1 << 20):
            sink.write(chunk)
        sink.finish()

    try:
        answer, _ = client.request("GET", url, read=copy, max_bytes=MAX_MANIFEST_BYTES)
    except HttpFailure as exc:
        raise RemoteError(
            f"cannot fetch the manifest: {exc}", fix="check the URL and the network"
        ) from exc
    status, body = answer.status, answer.error_body
    if 200 <= status < 300:
        return
    if status == 404:
        gone = ManifestGone(
            f"the manifest URL answers 404: {name} is gone",
            fix="upload again, or give the local manifest file",
        )
        gone.s3_answered = answer.s3_request_id is not None and answer.error_code == "NoSuchKey"
        raise gone
    expired = status == 403 and _expired_answer(body)
    if expired and s3_client is not None:
        try:
            info = parse_presigned_url(url)
        except PresignedUrlError as exc:
            raise UsageError(f"not a presigned S3 URL: {exc}") from exc
        if info.bucket and info.key.endswith("manifest.xml"):
            out.seek(0)
            out.truncate()
            download_object(s3_client(), info.bucket, info.key, out, sink=sink)
            return
    if expired:
        raise UsageError(
            "the manifest URL has expired",
            fix="give the local manifest file, or run 'manifestkit resume' to issue fresh URLs",
        )
    if 300 <= status < 400:
        raise RemoteError(
            f"the manifest URL answers HTTP {status} (a redirect, not followed: "
            f"{redact(str(answer.headers.get('Location', '')))[:200]!r})",
            fix="give the presigned S3 URL itself",
        )
    raise RemoteError(
        f"the manifest URL answers HTTP {status}: {_s3_error(body)}",
        fix="give the complete presigned GET URL that manifestkit upload printed, in quotes",
    )


def download_object(
    s3: Any,
    bucket: str,
    key: str,
    out: Any,
    *,
    expected_owner: str | None = None,
    sink: _ManifestSink | None = None,
) -> None:
    """GetObject ``key`` into ``out``, bounded like a download by URL (``_ManifestSink``)."""
    sink = sink or _ManifestSink(out, _folder_of(out), f"s3://{bucket}/{key}")
    try:
        answer = s3.get_object(Bucket=bucket, Key=key, **owner_args(expected_owner))
        length = answer.get("ContentLength")
        if isinstance(length, int) and length > MAX_MANIFEST_BYTES:
            raise ManifestTooLarge(
                f"s3://{bucket}/{key} is {length} bytes, more than a manifest can be",
                fix="check the bucket and key",
            )
        for chunk in answer["Body"].iter_chunks(1 << 20):
            sink.write(chunk)
        sink.finish()
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise translate(exc, bucket=bucket, key=key, action="read the manifest") from exc


def _folder_of(out: Any) -> str:
    name = getattr(out, "name", None)
    return os.path.dirname(name) if isinstance(name, str) and name else tempfile.gettempdir()


@dataclass(frozen=True)
class DescribedManifest:
    """What a manifestkit-layout manifest says about its upload."""

    bucket: str
    manifest_key: str
    plan: PartPlan
    file_format: str
    volume_gib: int
    #: the earliest expiry among the URLs looked at (self-destruct, first part)
    expires_at: dt.datetime


def describe(path: str) -> DescribedManifest:
    """Read a manifest (streaming) and rebuild the ``PartPlan`` its keys follow.

    Raises ``ManifestError`` when the manifest does not follow manifestkit's layout
    (``{prefix}/{uuid}/{basename}.part{N}``, equal parts but the last).
    """
    from manifestkit.manifest import iter_manifest
    from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url

    header, parts = iter_manifest(path)
    try:
        destruct = parse_presigned_url(header.self_destruct_url)
    except PresignedUrlError as exc:
        raise ManifestError(f"{path}: self-destruct-url is not a presigned URL: {exc}") from exc
    if not destruct.bucket:
        raise ManifestError(f"{path}: cannot tell the bucket from the self-destruct-url")
    plan: PartPlan | None = None
    expires_at = destruct.expires_at
    for part in parts:
        if plan is None:
            folder, _, name = part.key.rpartition("/")
            if not name.endswith(".part0") or not folder or part.index != 0:
                raise ManifestError(
                    f"{path}: the first part's key {part.key!r} is not "
                    "{prefix}/{uuid}/{name}.part0"
                )
            prefix, _, upload_id = folder.rpartition("/")
            plan = PartPlan(
                file_bytes=header.size,
                part_size=part.size,
                basename=name[: -len(".part0")],
                prefix=prefix,
                upload_id=upload_id,
            )
            with contextlib.suppress(PresignedUrlError):
                expires_at = min(expires_at, parse_presigned_url(part.get_url).expires_at)
            if plan.count != header.part_count:
                raise ManifestError(
                    f"{path}: {header.part_count} part{'' if header.part_count == 1 else 's'} "
                    f"of a {header.size}-byte image cannot be {part.size} bytes each"
                )
        if part.index >= plan.count:
            raise ManifestError(
                f"{path}: part {part.index} is beyond the "
                f"{plan.count} part{'' if plan.count == 1 else 's'}"
            )
        expected = plan.part(part.index)
        if (part.start, part.end, part.key) != (expected.start, expected.end, expected.key):
            raise ManifestError(
                f"{path}: part {part.index} ({part.key}) is not where the plan "
                f"puts it ({expected.key}, bytes {expected.start}-{expected.end})"
            )
    if plan is None:
        raise ManifestError(f"{path}: the manifest has no parts")
    if plan.manifest_key != destruct.key:
        raise ManifestError(
            f"{path}: the self-destruct-url is for {destruct.key!r}, not the "
            f"manifest key {plan.manifest_key!r}"
        )
    return DescribedManifest(
        destruct.bucket, plan.manifest_key, plan, header.file_format, header.volume_size, expires_at
    )


def plan_from_manifest(
    source: str,
    *,
    s3_client: Callable[[], Any] | None = None,
    policy: UrlPolicy | None = None,
) -> DescribedManifest:
    with local_manifest(source, s3_client=s3_client, policy=policy) as path:
        return describe(path)


def describe_manifest_object(
    s3: Any, bucket: str, key: str, *, expected_owner: str | None = None
) -> DescribedManifest:
    fd, tmp = _temp_copy()
    try:
        with os.fdopen(fd, "wb") as out:
            download_object(s3, bucket, key, out, expected_owner=expected_owner)
        return describe(tmp)
    finally:
        os.unlink(tmp)
