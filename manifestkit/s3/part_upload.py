"""Concurrent, verified, resumable upload of the parts of a ``PartPlan`` to S3.

How a part travels: a worker thread takes the part from a bounded queue (``manifestkit.s3.pool``),
reads its bytes with ``os.pread`` straight from the image (no shared file offset, no buffered
copy), sends them with ``PutObject`` and ``Content-MD5`` (S3 refuses a body that does not match,
``BadDigest``), and compares the returned ETag with the MD5 hex (for a single-PUT object without
SSE-KMS the ETag is the MD5 of its bytes). botocore retries throttling, 5xx and dropped
connections (its ``standard``/``adaptive`` retry modes); what survives that, and any ETag
mismatch, gets up to ``part_retries`` fresh attempts of the whole part.

Zero parts: a part that is all zeros (a hole, found with ``SEEK_DATA`` without reading, or read
and compared) is uploaded once per size and made server-side with ``CopyObject`` everywhere else.
On resume, a part already in the bucket whose size and ETag match the local bytes' MD5 is kept;
what is in the bucket comes from ListObjectsV2 pages merged with the plan
(``manifestkit.s3.part_listing``), kept as 16 B + 1 B a part (``RemoteParts``), or from a HEAD per
part where listing is denied (``HeadParts``). The verification pass after the upload lists too
(``verify_uploaded``), with the same HEAD fallback.

Worst-case memory (``workers`` = W, ``part_size`` = P):

    W x P                  one part buffer per worker (read, hashed and sent from the same bytes)
  + 2 x P                  the cached zero blocks (full part, short last part); calloc'd, so only
                           resident after a zero comparison touches them
  + 16 B x number of parts MD5 digests kept for the verification pass (1.6 MB for 100,000 parts)
  + 17 B x number of parts on resume: the listed ETags and a size-matches flag (27 MB at 1.6 M)
  + one ListObjectsV2 page (1,000 keys) while listing
  + O(W)                   queue entries (a ``Part`` each) and botocore's connection pool

and nothing proportional to the image size: 8 workers x 10 MiB parts ~ 80-100 MiB whether the
image is 1 GiB or 1 TiB.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Literal, Protocol

import botocore.exceptions

from manifestkit.errors import ImageError, ManifestkitError, UploadError
from manifestkit.parts import Part, PartPlan
from manifestkit.progress import NoProgress, Progress
from manifestkit.s3.bucket_checks import owner_args
from manifestkit.s3.errors import is_transient, translate
from manifestkit.s3.part_listing import (
    ListingRefused,
    RemoteObject,
    etag_of,
    iter_listing,
    merge_with_plan,
)
from manifestkit.s3.pool import CancelToken, run_bounded
from manifestkit.s3.zeroparts import ZeroBlocks, range_is_hole

log = logging.getLogger("manifestkit")

#: whole-part attempts after botocore's own retries (ETag mismatch, outage, reset connections)
DEFAULT_PART_RETRIES = 3
#: seconds between whole-part attempts: 1, 2, 4...
_RETRY_BACKOFF = 1.0


def default_workers(cpu_count: int | None = None) -> int:
    """min(8, max(4, 2 x CPUs)).

    An upload waits on the network, not the CPU, so more requests in flight than cores pays off
    until the link is full; but each worker hashes its part (Content-MD5; the upload client leaves
    the payload unsigned and adds no CRC32: ``workflow.upload.upload_s3_client``) and holds one
    part in memory. At least 4 keeps a high-latency link busy;
    at most 8 keeps memory at 8 x part size (80 MiB at the default 10 MiB) and is where a single
    S3 prefix stops scaling per client on one machine (s3transfer defaults to 10).
    """
    cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
    return min(8, max(4, 2 * cpus))


Action = Literal["put", "copy", "kept"]


@dataclass(frozen=True)
class PartOutcome:
    index: int
    action: Action
    md5: bytes
    bytes_sent: int


@dataclass(frozen=True)
class UploadStats:
    parts: int
    put: int
    copied: int
    kept: int
    bytes_sent: int
    file_bytes: int

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


class PartTally:
    """What one run's parts came to, added up as their outcomes arrive."""

    def __init__(self) -> None:
        self.counts = {"put": 0, "copy": 0, "kept": 0}
        self.bytes_sent = 0

    def add(self, outcome: PartOutcome) -> None:
        self.counts[outcome.action] += 1
        self.bytes_sent += outcome.bytes_sent

    def stats(self, *, parts: int, file_bytes: int) -> UploadStats:
        return UploadStats(
            parts=parts,
            put=self.counts["put"],
            copied=self.counts["copy"],
            kept=self.counts["kept"],
            bytes_sent=self.bytes_sent,
            file_bytes=file_bytes,
        )


class _ETagMismatch(Exception):
    pass


class PartBody:
    """A part's bytes as the request body, sent with one ``sendall`` and never copied.

    Given ``bytes``, botocore wraps them in a ``BytesIO`` that urllib3 then reads and sends
    16 KiB at a time: 640 reads (each a copy), Python calls and ``send`` system calls per 10 MiB
    part. Here ``read`` hands back everything not yet read as one ``memoryview`` whatever size
    is asked (urllib3 only loops until the body is empty); ``seek``/``tell`` let botocore rewind
    it for a retry.
    """

    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def __len__(self) -> int:
        return len(self._view)

    def read(self, size: int | None = -1) -> memoryview:
        rest = self._view[self._pos :]
        self._pos = len(self._view)
        return rest

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: len(self._view)}[whence]
        self._pos = min(max(0, base + offset), len(self._view))
        return self._pos

    def tell(self) -> int:
        return self._pos


_etag = etag_of


class ExistingParts(Protocol):
    """What a resumed upload knows of the bucket: is this part there with these bytes?"""

    def matches(self, part: Part, md5: bytes) -> bool: ...

    def __contains__(self, key: object) -> bool: ...


class RemoteParts:
    """The plan's parts found by listing: 16 bytes of ETag and one flag byte a part, no keys."""

    def __init__(self, plan: PartPlan) -> None:
        self.plan = plan
        self._md5 = bytearray(16 * plan.count)
        #: 1 where a part is listed with its planned size and a plain-MD5 ETag
        self._listed = bytearray(plan.count)
        self.manifest_listed = False

    def matches(self, part: Part, md5: bytes) -> bool:
        return (
            bool(self._listed[part.index])
            and self._md5[16 * part.index : 16 * part.index + 16] == md5
        )

    def __contains__(self, key: object) -> bool:
        """Only the manifest key is answered (the parts are asked by ``matches``)."""
        return key == self.plan.manifest_key and self.manifest_listed


class HeadParts:
    """Where listing is denied: HEAD a part when the uploader asks about it (resume only)."""

    def __init__(
        self, s3: Any, bucket: str, plan: PartPlan, *, expected_owner: str | None = None
    ) -> None:
        self.s3, self.bucket, self.plan = s3, bucket, plan
        self.owner = owner_args(expected_owner)

    def _head(self, key: str) -> RemoteObject | None:
        try:
            head = self.s3.head_object(Bucket=self.bucket, Key=key, **self.owner)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise translate(exc, bucket=self.bucket, key=key, action="look at") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise translate(exc, bucket=self.bucket, key=key, action="look at") from exc
        return RemoteObject(int(head["ContentLength"]), _etag(head.get("ETag")))

    def matches(self, part: Part, md5: bytes) -> bool:
        remote = self._head(part.key)
        return remote is not None and remote.size == part.size and remote.md5() == md5

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._head(key) is not None


class _MappingParts:
    """A key -> ``RemoteObject`` mapping (tests, callers that have one) as ``ExistingParts``."""

    def __init__(self, found: Mapping[str, RemoteObject]) -> None:
        self.found = found

    def matches(self, part: Part, md5: bytes) -> bool:
        remote = self.found.get(part.key)
        return remote is not None and remote.size == part.size and remote.etag == md5.hex()

    def __contains__(self, key: object) -> bool:
        return key in self.found


def list_existing(
    s3: Any, bucket: str, plan: PartPlan | str, *, expected_owner: str | None = None
) -> Any:
    """What of ``plan`` is in the bucket (an ``ExistingParts``): by ListObjectsV2 pages merged with
    the plan (no map of keys is built), or, where listing is refused by policy, by a HEAD per part
    on demand. Given a key prefix instead of a plan (the plan is not known yet): a key ->
    ``RemoteObject`` map of everything under it."""
    if isinstance(plan, str):
        try:
            return dict(iter_listing(s3, bucket, plan, expected_owner=expected_owner))
        except ListingRefused as exc:
            raise UploadError(
                f"cannot list the parts under s3://{bucket}/{plan}: {exc}",
                fix="allow s3:ListBucket on the bucket, or start a new upload",
            ) from exc
    found = RemoteParts(plan)

    def listing() -> Any:
        for key, obj in iter_listing(s3, bucket, plan.key_prefix, expected_owner=expected_owner):
            if key == plan.manifest_key:
                found.manifest_listed = True
            yield key, obj

    try:
        for part, remote in merge_with_plan(plan, listing()):
            md5 = remote.md5() if remote is not None else None
            if remote is not None and md5 is not None and remote.size == part.size:
                found._md5[16 * part.index : 16 * part.index + 16] = md5
                found._listed[part.index] = 1
    except ListingRefused as exc:
        log.info("%s; asking S3 about each part with HEAD instead", exc)
        return HeadParts(s3, bucket, plan, expected_owner=expected_owner)
    return found


class _ZeroSource:
    """The first zero part of one size: uploaded, then copied by every later zero part."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.ready = threading.Event()
        self.ok = False


class PartUploader:
    """Upload every part of ``plan`` from the image at ``path`` to ``bucket`` (module doc)."""

    def __init__(
        self,
        s3: Any,
        bucket: str,
        path: str | os.PathLike[str],
        plan: PartPlan,
        *,
        workers: int | None = None,
        part_retries: int = DEFAULT_PART_RETRIES,
        expected_owner: str | None = None,
        dedupe_zeros: bool = True,
        existing: ExistingParts | Mapping[str, RemoteObject] | None = None,
        progress: Progress | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.path = os.fspath(path)
        self.plan = plan
        self.workers = workers or default_workers()
        self.part_retries = max(1, part_retries)
        self.owner = owner_args(expected_owner)
        self.dedupe_zeros = dedupe_zeros
        if existing is None or isinstance(existing, Mapping):
            existing = _MappingParts(existing or {})
        self.existing: ExistingParts = existing
        self.progress = progress or NoProgress()
        self.cancel = cancel or CancelToken()
        self.zeros = ZeroBlocks()
        self._sources: dict[int, _ZeroSource] = {}
        self._sources_lock = threading.Lock()
        #: MD5 of every part, filled as parts complete (16 bytes each)
        self.digests = bytearray(16 * plan.count)
        self._fd = -1

    # -- the whole run ------------------------------------------------------------------------

    def run(self, parts: Iterable[Part] | None = None) -> UploadStats:
        tally = PartTally()

        def on_result(part: Part, outcome: PartOutcome) -> None:
            tally.add(outcome)
            self.digests[16 * part.index : 16 * part.index + 16] = outcome.md5
            self.progress.advance(part.size)

        self._fd = os.open(self.path, os.O_RDONLY)
        try:
            if os.fstat(self._fd).st_size != self.plan.file_bytes:
                raise ImageError(
                    f"{self.path} is {os.fstat(self._fd).st_size} bytes, the upload plan says "
                    f"{self.plan.file_bytes}",
                    fix="the image changed; start a new upload",
                )
            self.progress.start(self.plan.file_bytes, "upload")
            try:
                run_bounded(
                    parts if parts is not None else self.plan,
                    self._upload_part,
                    workers=self.workers,
                    on_result=on_result,
                    cancel=self.cancel,
                    name="manifestkit-upload",
                )
            finally:
                self.progress.close()
        finally:
            os.close(self._fd)
            self._fd = -1
        return tally.stats(parts=self.plan.count, file_bytes=self.plan.file_bytes)

    def md5_hex(self, index: int) -> str:
        return self.digests[16 * index : 16 * index + 16].hex()

    # -- one part -----------------------------------------------------------------------------

    def _upload_part(self, part: Part) -> PartOutcome:
        last: BaseException | None = None
        for attempt in range(1, self.part_retries + 1):
            self.cancel.check()
            try:
                return self._attempt(part)
            except ManifestkitError:
                raise
            except _ETagMismatch as exc:
                last = exc
            except (
                botocore.exceptions.ClientError,
                botocore.exceptions.BotoCoreError,
                OSError,
            ) as exc:
                if isinstance(exc, OSError) and not isinstance(
                    exc, (ConnectionError, TimeoutError)
                ):
                    raise
                if not is_transient(exc):
                    raise translate(exc, bucket=self.bucket, key=part.key, action="upload") from exc
                last = exc
            log.debug(
                "part %d attempt %d/%d failed: %s", part.index, attempt, self.part_retries, last
            )
            if attempt < self.part_retries and self.cancel.wait(
                _RETRY_BACKOFF * 2 ** (attempt - 1)
            ):
                self.cancel.check()
        raise UploadError(
            f"part {part.index} (s3://{self.bucket}/{part.key}) failed after "
            f"{self.part_retries} attempts: {last}",
            fix="check the network and run the same command with --resume",
        )

    def _read(self, part: Part) -> bytes:
        try:
            data = os.pread(self._fd, part.size, part.start)
        except OSError as exc:
            raise ImageError(
                f"cannot read {self.path} at offset {part.start}: {exc.strerror or exc}",
                fix="check the disk (dmesg) or copy the image to healthy storage and --resume",
            ) from exc
        if len(data) != part.size:
            raise ImageError(
                f"{self.path} ended at byte {part.start + len(data)} while reading part "
                f"{part.index}",
                fix="the image shrank while uploading; start a new upload",
            )
        return data

    def _attempt(self, part: Part) -> PartOutcome:
        data: bytes | None = None
        zero = False
        if self.dedupe_zeros:
            zero = bool(range_is_hole(self._fd, part.start, part.end))
        if not zero:
            data = self._read(part)
            zero = self.dedupe_zeros and self.zeros.is_zero(data)
        if zero:
            md5 = self.zeros.md5(part.size)
            if self._matches_remote(part, md5):
                self._note_zero_source(part)
                return PartOutcome(part.index, "kept", md5, 0)
            return self._zero_part(part, md5)
        assert data is not None
        md5 = hashlib.md5(data).digest()
        if self._matches_remote(part, md5):
            return PartOutcome(part.index, "kept", md5, 0)
        self._put(part, data, md5)
        return PartOutcome(part.index, "put", md5, part.size)

    def _matches_remote(self, part: Part, md5: bytes) -> bool:
        return self.existing.matches(part, md5)

    def _put(self, part: Part, data: bytes, md5: bytes) -> None:
        self.cancel.check()
        response = self.s3.put_object(
            Bucket=self.bucket,
            Key=part.key,
            Body=PartBody(data),
            ContentLength=len(data),
            ContentMD5=base64.b64encode(md5).decode(),
            ContentType="application/octet-stream",
            **self.owner,
        )
        if _etag(response.get("ETag")) != md5.hex():
            raise _ETagMismatch(
                f"ETag {response.get('ETag')} for part {part.index} is not its MD5 {md5.hex()}"
            )

    # -- zero parts ---------------------------------------------------------------------------

    def _note_zero_source(self, part: Part) -> None:
        """A zero part already in the bucket can be the copy source for its size."""
        with self._sources_lock:
            if part.size not in self._sources:
                source = _ZeroSource(part.key)
                source.ok = True
                source.ready.set()
                self._sources[part.size] = source

    def _zero_part(self, part: Part, md5: bytes) -> PartOutcome:
        while True:
            with self._sources_lock:
                source = self._sources.get(part.size)
                owner = source is None
                if owner:
                    source = self._sources[part.size] = _ZeroSource(part.key)
            assert source is not None
            if owner:
                try:
                    self._put(part, self.zeros.block(part.size), md5)
                    source.ok = True
                except BaseException:
                    with self._sources_lock:  # let the next zero part of this size be the source
                        if self._sources.get(part.size) is source:
                            del self._sources[part.size]
                    raise
                finally:
                    source.ready.set()
                return PartOutcome(part.index, "put", md5, part.size)
            # The source was claimed by a part taken from the queue earlier, so it is in flight
            # on another worker, never waiting behind this one.
            while not source.ready.wait(0.2):
                self.cancel.check()
            if source.ok:
                break
            # its upload failed: claim the source role (or wait for whoever did) again
        self.cancel.check()
        response = self.s3.copy_object(
            Bucket=self.bucket,
            Key=part.key,
            CopySource={"Bucket": self.bucket, "Key": source.key},
            **self.owner,
            **(
                {"ExpectedSourceBucketOwner": self.owner["ExpectedBucketOwner"]}
                if self.owner
                else {}
            ),
        )
        etag = _etag(response.get("CopyObjectResult", {}).get("ETag"))
        if etag != md5.hex():
            raise _ETagMismatch(
                f"CopyObject ETag {etag} for zero part {part.index} is not {md5.hex()}"
            )
        return PartOutcome(part.index, "copy", md5, 0)


# -- after the parts: the verification pass --------------------------------------------------


def verify_uploaded(
    s3: Any,
    bucket: str,
    plan: PartPlan,
    md5_hex: Callable[[int], str],
    *,
    workers: int,
    expected_owner: str | None = None,
    progress: Progress | None = None,
    cancel: CancelToken | None = None,
) -> None:
    """Every part's size and ETag must be what was sent. Raises ``UploadError``.

    Listed (ListObjectsV2, 1,000 parts a request, merged with the plan page by page); where
    listing is refused (AccessDenied by a bucket policy, or a server that does not list in key
    order) a HEAD per part, ``workers`` at a time.
    """
    progress = progress or NoProgress()
    progress.start(plan.file_bytes, "verify")
    try:
        try:
            _verify_by_listing(s3, bucket, plan, md5_hex, expected_owner, progress, cancel)
            return
        except ListingRefused as exc:
            log.info("%s; verifying each part with HEAD instead", exc)
        progress.close()
        progress.start(plan.file_bytes, "verify")
        _verify_by_head(s3, bucket, plan, md5_hex, workers, expected_owner, progress, cancel)
    finally:
        progress.close()


def _check_part(
    bucket: str, part: Part, remote: RemoteObject | None, md5_hex: Callable[[int], str]
) -> None:
    if remote is None:
        raise UploadError(
            f"part {part.index} (s3://{bucket}/{part.key}) is missing after upload",
            fix="something deleted it; run the same command with --resume",
        )
    if remote.size != part.size or remote.etag != md5_hex(part.index):
        raise UploadError(
            f"part {part.index} (s3://{bucket}/{part.key}) is {remote.size} bytes with ETag "
            f"{remote.etag} after upload; expected {part.size} bytes with MD5 "
            f"{md5_hex(part.index)}",
            fix="run the same command with --resume to send it again",
        )


def _verify_by_listing(
    s3: Any,
    bucket: str,
    plan: PartPlan,
    md5_hex: Callable[[int], str],
    expected_owner: str | None,
    progress: Progress,
    cancel: CancelToken | None,
) -> None:
    listing = iter_listing(s3, bucket, plan.key_prefix, expected_owner=expected_owner)
    for part, remote in merge_with_plan(plan, listing):
        if cancel is not None:
            cancel.check()
        _check_part(bucket, part, remote, md5_hex)
        progress.advance(part.size)


def _verify_by_head(
    s3: Any,
    bucket: str,
    plan: PartPlan,
    md5_hex: Callable[[int], str],
    workers: int,
    expected_owner: str | None,
    progress: Progress,
    cancel: CancelToken | None,
) -> None:
    owner = owner_args(expected_owner)

    def check(part: Part) -> None:
        try:
            head = s3.head_object(Bucket=bucket, Key=part.key, **owner)
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise UploadError(
                    f"part {part.index} (s3://{bucket}/{part.key}) is missing after upload",
                    fix="something deleted it; run the same command with --resume",
                ) from exc
            raise translate(exc, bucket=bucket, key=part.key, action="verify") from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise translate(exc, bucket=bucket, key=part.key, action="verify") from exc
        remote = RemoteObject(int(head["ContentLength"]), _etag(head.get("ETag")))
        _check_part(bucket, part, remote, md5_hex)

    run_bounded(
        plan,
        check,
        workers=workers,
        on_result=lambda part, _: progress.advance(part.size),
        cancel=cancel,
        name="manifestkit-verify",
    )


def put_manifest_file(
    s3: Any,
    bucket: str,
    key: str,
    source: str | os.PathLike[str] | IO[bytes],
    *,
    expected_owner: str | None = None,
) -> None:
    """PUT the manifest XML from ``source`` (a path, or a seekable binary file object read from
    its start), streamed from it, MD5-checked."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as src:
            _put_manifest(s3, bucket, key, src, expected_owner)
    else:
        _put_manifest(s3, bucket, key, source, expected_owner)


def _put_manifest(
    s3: Any, bucket: str, key: str, src: IO[bytes], expected_owner: str | None
) -> None:
    digest = hashlib.md5()
    src.seek(0)
    for chunk in iter(lambda: src.read(1 << 20), b""):
        digest.update(chunk)
    length = src.tell()
    src.seek(0)
    try:
        response = s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=src,
            ContentLength=length,
            ContentMD5=base64.b64encode(digest.digest()).decode(),
            ContentType="application/xml",
            **owner_args(expected_owner),
        )
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise translate(exc, bucket=bucket, key=key, action="upload the manifest to") from exc
    if _etag(response.get("ETag")) != digest.hexdigest():
        raise UploadError(
            f"the manifest s3://{bucket}/{key} came back with ETag {response.get('ETag')}"
        )
