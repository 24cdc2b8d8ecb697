"""Upload a byte stream of unknown length as the parts of an upload, with no file in between.

The streamed counterpart of ``part_upload.PartUploader`` (whose per-part machinery it reuses:
Content-MD5, the ETag check, whole-part retries, zero parts made with ``CopyObject``, parts
already in the bucket with the same size and MD5 kept on resume). The producer -- the
streamOptimized writer for ``upload --convert``, or a pipe -- yields byte chunks in the calling
thread; ``cut_into_parts`` gathers them into part-sized buffers, and each full buffer goes to a
worker of the bounded pool (``pool.run_bounded``) while the producer goes on. The last part and
the stream's length are known only when the producer ends; ``StreamedUpload.plan`` is then the
``PartPlan`` of what was sent (every part ``part_size`` except the last, the keys a plan of that
length gives), for the verification pass and the manifest.

Worst-case memory (``workers`` = W, ``queue_depth`` = Q, ``part_size`` = P):

    (W + Q + 2) x P        W parts being sent, Q waiting in the queue, one the pool holds
                           while the queue is full, one being filled
  + 2 x P                  the cached zero blocks (as ``PartUploader``; resident only when touched)
  + 16 B x number of parts MD5 digests kept for the verification pass
  + the producer's own     (the streamOptimized writer: about 2.1 MiB x (2 x deflate threads + 2))

nothing proportional to the stream's length: 8 workers, Q = 2, 10 MiB parts ~ 120 MiB plus the
writer's ~20 MiB whether the disk is 1 GiB or 1 TiB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from manifestkit.errors import UploadError
from manifestkit.parts import MAX_PARTS, Part, PartPlan
from manifestkit.progress import NoProgress, Progress
from manifestkit.s3.part_upload import (
    DEFAULT_PART_RETRIES,
    PartOutcome,
    PartTally,
    PartUploader,
    RemoteObject,
    UploadStats,
    default_workers,
)
from manifestkit.s3.pool import CancelToken, run_bounded

#: parts waiting for a worker beyond the ones being sent (each is a part-sized buffer)
DEFAULT_QUEUE_DEPTH = 2


@dataclass(frozen=True)
class BufferedPart(Part):
    """A part whose bytes are in memory (the stream has no file to read them from again)."""

    data: bytes = field(default=b"", repr=False, compare=False)


def cut_into_parts(
    chunks: Iterable[bytes], *, part_size: int, key_prefix: str, basename: str
) -> Iterator[BufferedPart]:
    """Gather ``chunks`` into parts of ``part_size`` bytes (the last one shorter), keyed as a
    ``PartPlan`` of the stream's length keys them (``{key_prefix}{basename}.part{N}``)."""
    buffer = bytearray()
    index = 0
    start = 0

    def part(data: bytes) -> BufferedPart:
        nonlocal index, start
        if index >= MAX_PARTS:
            raise UploadError(
                f"the stream needs more than {MAX_PARTS} parts of {part_size} bytes",
                fix="choose a larger --part-size",
            )
        made = BufferedPart(
            index, start, start + len(data) - 1, f"{key_prefix}{basename}.part{index}", data
        )
        index += 1
        start += len(data)
        return made

    for chunk in chunks:
        if not buffer and len(chunk) == part_size:
            yield part(bytes(chunk))
            continue
        buffer += chunk
        while len(buffer) >= part_size:
            yield part(bytes(buffer[:part_size]))
            del buffer[:part_size]  # CPython moves the start of a bytearray: no copy of the rest
    if buffer:
        yield part(bytes(buffer))


class _StreamPartUploader(PartUploader):
    """``PartUploader`` whose parts carry their bytes; nothing is read from a file."""

    def _attempt(self, part: Part) -> PartOutcome:
        assert isinstance(part, BufferedPart)
        data = part.data
        if self.dedupe_zeros and self.zeros.is_zero(data):
            md5 = self.zeros.md5(part.size)
            if self._matches_remote(part, md5):
                self._note_zero_source(part)
                return PartOutcome(part.index, "kept", md5, 0)
            return self._zero_part(part, md5)
        md5 = hashlib.md5(data).digest()
        if self._matches_remote(part, md5):
            return PartOutcome(part.index, "kept", md5, 0)
        self._put(part, data, md5)
        return PartOutcome(part.index, "put", md5, part.size)


class StreamedUpload:
    """Send the parts ``cut_into_parts`` makes of a stream; ``run`` returns the stats.

    ``plan`` (the ``PartPlan`` of the stream's length, with this upload's keys) and ``md5_hex``
    are for the verification pass and the manifest once ``run`` has returned.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        *,
        basename: str,
        prefix: str,
        upload_id: str,
        part_size: int,
        workers: int | None = None,
        queue_depth: int = DEFAULT_QUEUE_DEPTH,
        part_retries: int = DEFAULT_PART_RETRIES,
        expected_owner: str | None = None,
        dedupe_zeros: bool = True,
        existing: Mapping[str, RemoteObject] | None = None,
        progress: Progress | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        # the plan of a one-byte stream: checks the names and gives the key prefix; the real plan
        # is known when the stream ends
        self._naming = PartPlan(
            file_bytes=1, part_size=part_size, basename=basename, prefix=prefix, upload_id=upload_id
        )
        self.workers = workers or default_workers()
        self.queue_depth = max(1, queue_depth)
        self.progress = progress or NoProgress()
        self.cancel = cancel or CancelToken()
        self._uploader = _StreamPartUploader(
            s3,
            bucket,
            "-",
            self._naming,
            workers=self.workers,
            part_retries=part_retries,
            expected_owner=expected_owner,
            dedupe_zeros=dedupe_zeros,
            existing=existing,
            progress=NoProgress(),
            cancel=self.cancel,
        )
        self._uploader.digests = bytearray()
        self.plan: PartPlan | None = None

    @property
    def key_prefix(self) -> str:
        return self._naming.key_prefix

    def run(self, chunks: Iterable[bytes]) -> UploadStats:
        """Send every part of ``chunks``; raises what the producer or a part raised."""
        naming = self._naming
        tally = PartTally()
        total = 0
        digests = self._uploader.digests

        def on_result(part: Part, outcome: PartOutcome) -> None:
            tally.add(outcome)
            if len(digests) < 16 * (part.index + 1):
                digests.extend(bytes(16 * (part.index + 1) - len(digests)))
            digests[16 * part.index : 16 * part.index + 16] = outcome.md5
            self.progress.advance(outcome.bytes_sent)

        def parts() -> Iterator[BufferedPart]:
            nonlocal total
            for part in cut_into_parts(
                chunks,
                part_size=naming.part_size,
                key_prefix=naming.key_prefix,
                basename=naming.basename,
            ):
                total = part.end + 1
                yield part

        try:
            run_bounded(
                parts(),
                self._uploader._upload_part,
                workers=self.workers,
                on_result=on_result,
                cancel=self.cancel,
                queue_depth=self.queue_depth,
                name="manifestkit-stream",
            )
        except BaseException:
            # the producer failed (a disk read error, a pipe that broke): the parts in flight
            # stop before their next request; nothing after them is sent
            self.cancel.cancel()
            raise
        if total == 0:
            raise UploadError("the stream ended before its first byte: nothing to upload")
        self.plan = PartPlan(
            file_bytes=total,
            part_size=naming.part_size,
            basename=naming.basename,
            prefix=naming.prefix,
            upload_id=naming.upload_id,
        )
        return tally.stats(parts=self.plan.count, file_bytes=total)

    def md5_hex(self, index: int) -> str:
        return self._uploader.md5_hex(index)
