"""``verify``: do what the importer does with a manifest, and say what would fail.

Fetch the manifest (by its URL, without credentials, or from a file), validate it (XSD and the
semantic rules), HEAD every head-url and check the size against the byte range, and with a local
image GET every get-url and compare the bytes (streamed in 1 MiB slices: memory is
``workers x 2 MiB`` whatever the part size). One problem per part (the first found) and a summary.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from manifestkit.errors import ImageError, ManifestError
from manifestkit.progress import NoProgress, Progress
from manifestkit.s3.pool import CancelToken, run_bounded
from manifestkit.s3.presigned_http import (
    Body,
    HttpFailure,
    Limits,
    PresignedHttp,
    TooLarge,
    TooSlow,
    content_length,
    redact,
    url_expired,
)
from manifestkit.s3.url_policy import UrlPolicy
from manifestkit.workflow.manifest_source import is_url, local_manifest

CHUNK = 1 << 20
DEFAULT_WORKERS = 8


@dataclass(frozen=True)
class PartProblem:
    index: int
    key: str
    #: missing | wrong-size | expired | denied | http-error | unreachable | too-slow |
    #: content-differs
    kind: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "key": self.key, "kind": self.kind, "message": self.message}


@dataclass(frozen=True)
class VerifyReport:
    #: the manifest file, or its URL without the signature
    manifest: str
    size: int
    parts: int
    ok: int
    compared_content: bool
    bytes_checked: int
    problems: tuple[PartProblem, ...] = field(default_factory=tuple)

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0

    def to_dict(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for problem in self.problems:
            kinds[problem.kind] = kinds.get(problem.kind, 0) + 1
        return {
            "manifest": self.manifest,
            "valid": True,
            "size": self.size,
            "parts": self.parts,
            "ok": self.ok,
            "problems_by_kind": kinds,
            "compared_content": self.compared_content,
            "bytes_checked": self.bytes_checked,
            "problems": [p.to_dict() for p in self.problems],
        }


def verify_manifest(
    source: str,
    *,
    image: str | os.PathLike[str] | None = None,
    workers: int = DEFAULT_WORKERS,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
    now: dt.datetime | None = None,
    s3_client: Callable[[], Any] | None = None,
    url_policy: UrlPolicy | None = None,
    limits: Limits | None = None,
) -> VerifyReport:
    """Check the manifest ``source`` (path or URL) and every part it names; see the module doc.

    Raises ``ManifestError`` (exit 2) for an invalid manifest, ``ImageError`` (exit 2) when
    ``image`` is not the manifest's size; remote problems are in the report (exit 1).
    ``url_policy`` (default: the endpoints boto3's configuration names, and AWS's) says where
    the manifest's URLs may point: a URL outside it makes the manifest invalid (SECURITY.md).
    """
    from manifestkit.manifest import errors_only, iter_manifest, validate_manifest

    progress = progress or NoProgress()
    name = redact(source) if is_url(source) else source
    current = now or dt.datetime.now(dt.timezone.utc)
    policy = url_policy if url_policy is not None else UrlPolicy.from_settings(None)
    with local_manifest(source, s3_client=s3_client, policy=policy, limits=limits) as path:
        errors = errors_only(validate_manifest(path, now=current, url_policy=policy))
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            expired = any("expire" in str(e).lower() for e in errors)
            raise ManifestError(
                f"{name} is not a valid manifest: {errors[0]}{more}",
                fix="run 'manifestkit resume MANIFEST IMAGE' for fresh URLs"
                if expired
                else "run 'manifestkit validate' on it for every problem",
            )
        header, parts = iter_manifest(path)
        fd = -1
        if image is not None:
            fd = _open_image(image, header.size)
        client = PresignedHttp(policy=policy, limits=limits)
        problems: list[PartProblem] = []
        counts = {"parts": 0, "ok": 0, "bytes": 0}

        def check(part: Any) -> PartProblem | None:
            return _check_part(client, part, fd, os.fspath(image) if image else "", current)

        def on_result(part: Any, problem: PartProblem | None) -> None:
            counts["parts"] += 1
            if problem is None:
                counts["ok"] += 1
                counts["bytes"] += part.size
            else:
                problems.append(problem)
            progress.advance(part.size)

        progress.start(header.size, "verify")
        try:
            run_bounded(
                parts,
                check,
                workers=workers,
                on_result=on_result,
                cancel=cancel,
                name="manifestkit-verify",
            )
        finally:
            progress.close()
            if fd >= 0:
                os.close(fd)
    problems.sort(key=lambda p: p.index)
    return VerifyReport(
        manifest=name,
        size=header.size,
        parts=counts["parts"],
        ok=counts["ok"],
        compared_content=image is not None,
        bytes_checked=counts["bytes"] if image else 0,
        problems=tuple(problems),
    )


def _open_image(image: str | os.PathLike[str], size: int) -> int:
    try:
        fd = os.open(image, os.O_RDONLY)
    except OSError as exc:
        raise ImageError(
            f"cannot open {os.fspath(image)}: {exc.strerror}", fix="check the path"
        ) from exc
    actual = os.fstat(fd).st_size
    if actual != size:
        os.close(fd)
        raise ImageError(
            f"{os.fspath(image)} is {actual} bytes but the manifest describes {size} bytes",
            fix="give the image the manifest was made for",
        )
    return fd


def _remote_problem(part: Any, url: str, answer: Any, what: str, now: dt.datetime) -> PartProblem:
    if answer.status == 404:
        return PartProblem(part.index, part.key, "missing", f"{what} answers 404: the part is gone")
    if answer.status == 403:
        if answer.says_expired or url_expired(url, now):
            return PartProblem(part.index, part.key, "expired", f"the {what} URL has expired")
        code = answer.error_code or "AccessDenied"
        return PartProblem(part.index, part.key, "denied", f"{what} answers 403 {code}")
    code = answer.error_code
    return PartProblem(
        part.index,
        part.key,
        "http-error",
        f"{what} answers HTTP {answer.status}{' ' + code if code else ''}",
    )


def _check_part(
    client: PresignedHttp, part: Any, fd: int, image: str, now: dt.datetime
) -> PartProblem | None:
    try:
        answer, _ = client.request("HEAD", part.head_url)
    except HttpFailure as exc:
        return _failure(part, exc)
    if not 200 <= answer.status < 300:
        return _remote_problem(part, part.head_url, answer, "HEAD", now)
    length = content_length(answer.headers)
    if length != part.size:
        said = answer.headers.get("Content-Length")
        shown = f"{length} bytes" if length is not None else f"Content-Length {said!r}"[:80]
        return PartProblem(
            part.index,
            part.key,
            "wrong-size",
            f"is {shown}; its byte range {part.start}-{part.end} says {part.size}",
        )
    if fd < 0:
        return None
    try:
        answer, differs = client.request(
            "GET",
            part.get_url,
            read=lambda body: _compare(body, fd, part, image),
            max_bytes=part.size,
        )
    except TooLarge:
        return PartProblem(
            part.index,
            part.key,
            "content-differs",
            f"GET returned more than the part's {part.size} bytes",
        )
    except HttpFailure as exc:
        return _failure(part, exc)
    if not 200 <= answer.status < 300:
        return _remote_problem(part, part.get_url, answer, "GET", now)
    if differs is not None:
        return PartProblem(part.index, part.key, "content-differs", differs)
    return None


def _failure(part: Any, exc: HttpFailure) -> PartProblem:
    kind = "too-slow" if isinstance(exc, TooSlow) else "unreachable"
    return PartProblem(part.index, part.key, kind, str(exc))


def _compare(body: Body, fd: int, part: Any, image: str) -> str | None:
    """None when the body equals the image's bytes of ``part``; else where they first differ."""
    declared = content_length(body.headers)
    if declared is not None and declared != part.size:
        return f"GET announces {declared} bytes; the part is {part.size}"
    offset = part.start
    while True:
        remote = body.read1(CHUNK)
        if not remote:
            break
        if offset + len(remote) > part.end + 1:
            return f"GET returned more than the part's {part.size} bytes"
        try:
            local = os.pread(fd, len(remote), offset)
        except OSError as exc:
            raise ImageError(
                f"cannot read {image} at offset {offset}: {exc.strerror}", fix="check the disk"
            ) from exc
        if local != remote:
            at = next(
                (i for i, (a, b) in enumerate(zip(local, remote, strict=False)) if a != b),
                min(len(local), len(remote)),
            )
            return f"differs from {image} at byte {offset + at}"
        offset += len(remote)
    if offset != part.end + 1:
        return f"GET returned {offset - part.start} of the part's {part.size} bytes"
    return None
