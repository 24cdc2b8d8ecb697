"""``delete``: remove every part and the manifest an upload left in S3.

Through the manifest's own delete-urls (no credentials needed), the manifest last via its
self-destruct-url, so an interrupted delete can simply be run again. A URL that has expired (403
"Request has expired") or a part without a delete-url falls back to an authenticated DeleteObject,
when the caller can offer an S3 client. Idempotent: S3 answers 204 for keys already gone, and 404
counts as gone too.

Refuses while a conversion task still reads the manifest: ``active_task_check`` gets
``"{bucket}/{manifest key}"`` and returns the id of an active task using it, or None (the CLI fills
it with ``manifestkit.ec2.find_active_task_for_manifest``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from manifestkit.errors import ManifestError, RemoteError, UsageError
from manifestkit.progress import NoProgress, Progress
from manifestkit.s3.bucket_checks import owner_args
from manifestkit.s3.errors import error_code, translate
from manifestkit.s3.pool import CancelToken, run_bounded
from manifestkit.s3.presigned_http import HttpFailure, PresignedHttp, redact, url_expired
from manifestkit.workflow.manifest_source import ManifestGone, is_url, local_manifest

log = logging.getLogger("manifestkit")

DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class DeleteReport:
    manifest: str
    bucket: str
    manifest_key: str
    parts: int
    #: objects removed through their presigned delete URL
    by_url: int
    #: objects removed with an authenticated DeleteObject (URL expired or absent)
    authenticated: int
    manifest_deleted: bool
    #: True when there was nothing left: the manifest itself was already gone
    already_gone: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "bucket": self.bucket,
            "manifest_key": self.manifest_key,
            "parts": self.parts,
            "deleted_by_url": self.by_url,
            "deleted_authenticated": self.authenticated,
            "manifest_deleted": self.manifest_deleted,
            "already_gone": self.already_gone,
        }


class _Deleter:
    def __init__(
        self,
        bucket: str,
        s3_client: Callable[[], Any] | None,
        expected_owner: str | None,
        now: dt.datetime | None,
    ) -> None:
        self.bucket = bucket
        self.http = PresignedHttp()
        self._s3_client = s3_client
        self._s3: Any = None
        self.owner = owner_args(expected_owner)
        self.now = now

    def s3(self, key: str) -> Any:
        if self._s3_client is None:
            raise RemoteError(
                f"the delete URL for s3://{self.bucket}/{key} has expired and no credentials "
                "were offered",
                fix="run with AWS credentials configured",
            )
        if self._s3 is None:
            self._s3 = self._s3_client()
        return self._s3

    def delete(self, key: str, url: str | None) -> str:
        """``url`` or ``authenticated`` (how the object went)."""
        if url:
            try:
                answer, _ = self.http.request("DELETE", url)
            except HttpFailure as exc:
                raise RemoteError(f"cannot delete s3://{self.bucket}/{key}: {exc}") from exc
            if 200 <= answer.status < 300 or answer.status == 404:
                return "url"
            expired = answer.says_expired or url_expired(url, self.now)
            if not expired:
                raise RemoteError(
                    f"deleting s3://{self.bucket}/{key} through its URL answered "
                    f"HTTP {answer.status} {answer.error_code}",
                    fix="check the URL, or delete with credentials",
                )
            log.debug("delete URL for %s expired; using credentials", key)
        try:
            self.s3(key).delete_object(Bucket=self.bucket, Key=key, **self.owner)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in ("NoSuchKey", "404"):
                raise translate(exc, bucket=self.bucket, key=key, action="delete") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise translate(exc, bucket=self.bucket, key=key, action="delete") from exc
        return "authenticated"


def delete_upload(
    source: str,
    *,
    s3_client: Callable[[], Any] | None = None,
    active_task_check: Callable[[str], str | None] | None = None,
    ignore_active_task: bool = False,
    expected_owner: str | None = None,
    workers: int = DEFAULT_WORKERS,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    now: dt.datetime | None = None,
) -> DeleteReport:
    """Delete the parts and the manifest ``source`` (file or URL) names; see the module doc."""
    from manifestkit.manifest import iter_manifest
    from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url

    progress = progress or NoProgress()
    name = redact(source) if is_url(source) else source
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(local_manifest(source, s3_client=s3_client))
        except ManifestGone:
            info = parse_presigned_url(source)
            log.warning("the manifest %s is already gone; nothing to delete", name)
            return DeleteReport(
                name, info.bucket or "", info.key, 0, 0, 0, False, already_gone=True
            )
        header, parts = iter_manifest(path)
        try:
            destruct = parse_presigned_url(header.self_destruct_url)
        except PresignedUrlError as exc:
            raise ManifestError(
                f"{name}: the self-destruct-url is not a presigned URL: {exc}"
            ) from exc
        if not destruct.bucket:
            raise ManifestError(f"{name}: cannot tell the bucket from the self-destruct-url")
        bucket, manifest_key = destruct.bucket, destruct.key
        if active_task_check is not None and not ignore_active_task:
            task = active_task_check(f"{bucket}/{manifest_key}")
            if task:
                raise UsageError(
                    f"conversion task {task} is still importing from this manifest",
                    fix=f"wait for it, cancel it (manifestkit cancel {task}), or pass "
                    "--ignore-active-task",
                )
        deleter = _Deleter(bucket, s3_client, expected_owner, now)
        counts = {"url": 0, "authenticated": 0, "parts": 0}

        def on_result(part: Any, how: str) -> None:
            counts[how] += 1
            counts["parts"] += 1
            progress.advance(1)

        progress.start(header.part_count, "delete")
        try:
            run_bounded(
                parts,
                lambda p: deleter.delete(p.key, p.delete_url),
                workers=workers,
                on_result=on_result,
                cancel=cancel,
                name="manifestkit-delete",
            )
        finally:
            progress.close()
        # The manifest last: while it exists, running delete again finds every part.
        how = deleter.delete(manifest_key, header.self_destruct_url)
        counts[how] += 1
    return DeleteReport(
        name, bucket, manifest_key, counts["parts"], counts["url"], counts["authenticated"], True
    )
