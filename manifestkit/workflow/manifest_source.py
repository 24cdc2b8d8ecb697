"""Getting hold of a manifest given as a file or as its presigned URL, and reading its layout back.

A URL is fetched the way the importer fetches it: a plain HTTP GET, no credentials, streamed to a
0600 temp file (a manifest for a 1 TiB image is ~150 MB of URLs). When the URL has expired and the
caller can offer an S3 client, the same object is read with an authenticated GetObject instead
(the bucket and key are in the URL).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from manifestkit.errors import ManifestError, RemoteError, UsageError
from manifestkit.parts import PartPlan
from manifestkit.s3.bucket_checks import owner_args
from manifestkit.s3.errors import translate

#: seconds to wait for the server when fetching a manifest by URL
HTTP_TIMEOUT = 60.0


class ManifestGone(RemoteError):
    """The manifest URL answers 404: the object was deleted (exit 1)."""


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _expired_answer(body: bytes) -> bool:
    # S3: 403 AccessDenied "Request has expired" (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html)
    return b"expired" in body.lower()


def _temp_copy() -> tuple[int, str]:
    return tempfile.mkstemp(prefix="manifestkit-manifest-", suffix=".xml")  # mode 0600


@contextlib.contextmanager
def local_manifest(source: str, *, s3_client: Callable[[], Any] | None = None) -> Iterator[str]:
    """A local path holding the manifest ``source`` (a path, or a URL fetched to a temp file)."""
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
            _fetch(source, out, s3_client)
        yield tmp
    finally:
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


def _fetch(url: str, out: Any, s3_client: Callable[[], Any] | None) -> None:
    from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url

    _check_complete(url)
    try:
        with urllib.request.urlopen(urllib.request.Request(url), timeout=HTTP_TIMEOUT) as response:
            shutil.copyfileobj(response, out, 1 << 20)
            return
    except urllib.error.HTTPError as exc:
        body = exc.read(4096)
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise RemoteError(
            f"cannot fetch the manifest: {reason}", fix="check the URL and the network"
        ) from exc
    if status == 404:
        raise ManifestGone(
            "the manifest URL answers 404: the manifest object is gone",
            fix="upload again, or give the local manifest file",
        )
    expired = status == 403 and _expired_answer(body)
    if expired and s3_client is not None:
        try:
            info = parse_presigned_url(url)
        except PresignedUrlError as exc:
            raise UsageError(f"not a presigned S3 URL: {exc}") from exc
        if info.bucket:
            download_object(s3_client(), info.bucket, info.key, out)
            return
    if expired:
        raise UsageError(
            "the manifest URL has expired",
            fix="give the local manifest file, or run 'manifestkit resume' to issue fresh URLs",
        )
    raise RemoteError(
        f"the manifest URL answers HTTP {status}: {_s3_error(body)}",
        fix="give the complete presigned GET URL that manifestkit upload printed, in quotes",
    )


def download_object(
    s3: Any, bucket: str, key: str, out: Any, *, expected_owner: str | None = None
) -> None:
    try:
        body = s3.get_object(Bucket=bucket, Key=key, **owner_args(expected_owner))["Body"]
        for chunk in body.iter_chunks(1 << 20):
            out.write(chunk)
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise translate(exc, bucket=bucket, key=key, action="read the manifest") from exc


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
                    f"{path}: {header.part_count} parts of a {header.size}-byte "
                    f"image cannot be {part.size} bytes each"
                )
        if part.index >= plan.count:
            raise ManifestError(f"{path}: part {part.index} is beyond the {plan.count} parts")
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
    source: str, *, s3_client: Callable[[], Any] | None = None
) -> DescribedManifest:
    with local_manifest(source, s3_client=s3_client) as path:
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
