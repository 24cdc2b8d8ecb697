"""``delete``: remove every part and the manifest an upload left in S3.

Through the manifest's own delete-urls (no credentials needed), the manifest last via its
self-destruct-url, so an interrupted delete can simply be run again. A URL that has expired (403
"Request has expired") or a part without a delete-url falls back to an authenticated DeleteObject,
when the caller can offer an S3 client. Idempotent: S3 answers 204 for keys already gone, and 404
counts as gone too.

A manifest is untrusted (SECURITY.md): before anything is deleted it must pass ``validate``'s
rules (an expired URL aside: that is what the fallback is for), every URL must pass the
``UrlPolicy``, and its layout must be one upload's (``check_layout``): one bucket, one folder
holding every part key and the manifest key, every URL addressing that bucket and its own
element's key on one endpoint. Otherwise ``ManifestError`` (exit 2) names the first offending
element and nothing is deleted; the credential fallback only ever deletes keys that passed.
A DELETE answer that is not S3's (not 2xx/404, or without ``x-amz-request-id``) is not a
deletion: ``RemoteError`` says what answered.

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
from manifestkit.s3.presigned_http import HttpFailure, Limits, PresignedHttp, redact, url_expired
from manifestkit.s3.url_policy import UrlPolicy
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
        http: PresignedHttp,
        layout: UploadLayout,
    ) -> None:
        self.layout = layout
        self.bucket = bucket
        self.http = http
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
        """``url`` or ``authenticated`` (how the object went); ``key`` passed ``check_layout``."""
        if url:
            try:
                answer, _ = self.http.request("DELETE", url)
            except HttpFailure as exc:
                raise RemoteError(f"cannot delete s3://{self.bucket}/{key}: {exc}") from exc
            # S3 answers every request with an x-amz-request-id, and never a DELETE with a page
            # (a 204 has no body, whatever Content-Type a server puts on it)
            kind = str(answer.headers.get("Content-Type", "")).lower()
            page = answer.status != 204 and "html" in kind
            s3_answered = answer.s3_request_id is not None and not page
            if s3_answered and (200 <= answer.status < 300 or answer.status == 404):
                return "url"
            expired = s3_answered and (answer.says_expired or url_expired(url, self.now))
            if not expired:
                if not s3_answered or 200 <= answer.status < 400:
                    raise RemoteError(
                        f"s3://{self.bucket}/{key} was not deleted: its delete URL "
                        f"({redact(url)}) answered {answer.describe_server()}, which is not S3's "
                        "answer to a DELETE",
                        fix="check where the manifest's URLs point; nothing was counted as deleted",
                    )
                raise RemoteError(
                    f"deleting s3://{self.bucket}/{key} through its URL answered "
                    f"HTTP {answer.status} {answer.error_code}",
                    fix="check the URL, or delete with credentials",
                )
            log.debug("delete URL for %s expired; using credentials", key)
        if not self.layout.may_use_credentials(key):
            raise UsageError(
                f"s3://{self.bucket}/{key}: its delete URL "
                f"{'has expired' if url else 'is missing'} and the key is not named as the "
                f"upload's part ({self.layout.folder}/{self.layout.basename}.partN): not "
                "deleting it with your credentials",
                fix="delete it yourself if it really is yours",
            )
        try:
            self.s3(key).delete_object(Bucket=self.bucket, Key=key, **self.owner)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) not in ("NoSuchKey", "404"):
                raise translate(exc, bucket=self.bucket, key=key, action="delete") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise translate(exc, bucket=self.bucket, key=key, action="delete") from exc
        return "authenticated"


#: validate's findings that do not stop a delete: expired URLs are what the fallback is for
_TOLERATED_RULES = frozenset({"url-expired", "url-expiry-max"})


@dataclass(frozen=True)
class UploadLayout:
    """What one upload owns, as ``check_layout`` proved it from the manifest."""

    bucket: str
    folder: str
    manifest_key: str
    #: scheme://host[:port] every URL uses
    endpoint: str
    #: the part keys' common name: ``{folder}/{basename}.part{N}`` (from the manifest key)
    basename: str = ""

    def may_use_credentials(self, key: str) -> bool:
        """Only the EC2 tools' names are deleted with the user's credentials: the manifest key
        and ``{folder}/{basename}.part{N}`` (a crafted manifest cannot aim them at other keys
        in the folder, such as ``payroll/important.db``)."""
        if key == self.manifest_key:
            return True
        stem = f"{self.folder}/{self.basename}.part"
        return key.startswith(stem) and key[len(stem) :].isdigit() and key[len(stem) :].isascii()


def check_layout(
    path: str, name: str, policy: UrlPolicy, now: dt.datetime | None = None
) -> UploadLayout:
    """Prove the manifest at ``path`` describes one upload (module doc) or raise ``ManifestError``
    naming the first offending element. Streams the manifest; nothing is sent anywhere."""
    from manifestkit.manifest import errors_only, iter_manifest, validate_manifest
    from manifestkit.manifest.model import MANIFEST_KEY_SUFFIX
    from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url

    def refuse(where: str, what: str) -> ManifestError:
        return ManifestError(
            f"{name}: {where}: {what}; not deleting anything",
            fix="delete only manifests that manifestkit upload wrote for your bucket",
        )

    errors = [
        p
        for p in errors_only(validate_manifest(path, url_policy=policy))
        if p.rule not in _TOLERATED_RULES
    ]
    if errors:
        raise refuse(errors[0].path, f"{errors[0].message} [{errors[0].rule}]")
    header, parts = iter_manifest(path)
    where = "/manifest/self-destruct-url"
    try:
        destruct = parse_presigned_url(header.self_destruct_url)
    except PresignedUrlError as exc:
        raise refuse(where, f"not a presigned URL: {exc}") from exc
    if not destruct.bucket:
        raise refuse(where, "names no bucket")
    manifest_key = destruct.key
    folder, _, leaf = manifest_key.rpartition("/")
    if not folder or not leaf.endswith(MANIFEST_KEY_SUFFIX):
        raise refuse(
            where,
            f"{manifest_key!r} is not a manifest key in an upload's folder "
            f"({{prefix}}/{{upload-id}}/{{name}}{MANIFEST_KEY_SUFFIX})",
        )
    layout = UploadLayout(
        destruct.bucket,
        folder,
        manifest_key,
        f"{destruct.scheme}://{destruct.host}",
        leaf[: -len(MANIFEST_KEY_SUFFIX)],
    )

    def same_object(at: str, url: str, key: str) -> None:
        try:
            info = parse_presigned_url(url)
        except PresignedUrlError as exc:
            raise refuse(at, f"not a presigned URL: {exc}") from exc
        endpoint = f"{info.scheme}://{info.host}"
        if (info.bucket, info.key, endpoint) != (layout.bucket, key, layout.endpoint):
            raise refuse(
                at,
                f"addresses {endpoint} s3://{info.bucket}/{info.key}, not "
                f"{layout.endpoint} s3://{layout.bucket}/{key}",
            )

    for part in parts:
        at = f"/manifest/import/parts/part[{part.index + 1}]"
        if part.key.rpartition("/")[0] != folder or part.key == manifest_key:
            raise refuse(
                f"{at}/key",
                f"{part.key!r} is not a part in the upload's folder {folder + '/'!r}",
            )
        if not layout.may_use_credentials(part.key) and (
            part.delete_url is None or url_expired(part.delete_url, now)
        ):
            raise refuse(
                f"{at}/delete-url",
                f"{'expired' if part.delete_url else 'missing'} for {part.key!r}, which is not "
                f"named as the upload's part ({folder}/{layout.basename}.partN): your "
                "credentials delete only an upload's own names",
            )
        for field, url in (
            ("head-url", part.head_url),
            ("get-url", part.get_url),
            ("delete-url", part.delete_url),
        ):
            if url is not None:
                same_object(f"{at}/{field}", url, part.key)
    return layout


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
    url_policy: UrlPolicy | None = None,
    limits: Limits | None = None,
) -> DeleteReport:
    """Delete the parts and the manifest ``source`` (file or URL) names; see the module doc.

    ``url_policy`` (default: the endpoints boto3's configuration names, and AWS's) says where
    URLs may point.
    """
    from manifestkit.manifest import iter_manifest
    from manifestkit.s3.presign import PresignedUrlError, parse_presigned_url

    progress = progress or NoProgress()
    policy = url_policy if url_policy is not None else UrlPolicy.from_settings(None)
    name = redact(source) if is_url(source) else source
    with contextlib.ExitStack() as stack:
        try:
            path = stack.enter_context(
                local_manifest(source, s3_client=s3_client, policy=policy, limits=limits)
            )
        except ManifestGone as exc:
            try:
                info = parse_presigned_url(source)
            except PresignedUrlError:
                info = None
            if info is None or not info.bucket or not exc.s3_answered:
                raise RemoteError(
                    f"{name} answers 404 and is not S3 answering for a presigned manifest URL; "
                    "nothing deleted",
                    fix="give the manifest file, or the presigned URL manifestkit upload printed",
                ) from exc
            log.warning("the manifest %s is already gone; nothing to delete", name)
            return DeleteReport(name, info.bucket, info.key, 0, 0, 0, False, already_gone=True)
        layout = check_layout(path, name, policy, now)
        bucket, manifest_key = layout.bucket, layout.manifest_key
        header, parts = iter_manifest(path)
        if active_task_check is not None and not ignore_active_task:
            task = active_task_check(f"{bucket}/{manifest_key}")
            if task:
                raise UsageError(
                    f"conversion task {task} is still importing from this manifest",
                    fix=f"wait for it, cancel it (manifestkit cancel {task}), or pass "
                    "--ignore-active-task",
                )
        http = PresignedHttp(policy=policy, limits=limits)
        deleter = _Deleter(bucket, s3_client, expected_owner, now, http, layout)
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
