"""``s3.stream_parts``: a byte stream of unknown length cut into parts and sent while it is made
(issue 13 item 1), against the sandbox; bytes read back with GET."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from manifestkit.errors import ImageError
from manifestkit.s3.part_upload import list_existing
from manifestkit.s3.pool import CancelToken
from manifestkit.s3.stream_parts import StreamedUpload, cut_into_parts


def _chunks(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at, i = [], 0, 0
    while at < len(data):
        n = sizes[i % len(sizes)]
        out.append(data[at : at + n])
        at += n
        i += 1
    return out


@pytest.mark.parametrize("sizes", [[1], [7, 100, 3000], [4096], [10_000]])
def test_cut_into_parts_keeps_every_byte_in_part_sized_pieces(sizes: list[int]) -> None:
    data = os.urandom(4096 * 3 + 17)
    parts = list(
        cut_into_parts(_chunks(data, sizes), part_size=4096, key_prefix="p/u/", basename="d.vmdk")
    )
    assert b"".join(p.data for p in parts) == data
    assert [p.size for p in parts] == [4096, 4096, 4096, 17]
    assert [(p.index, p.start, p.end) for p in parts][-1] == (3, 3 * 4096, 3 * 4096 + 16)
    assert parts[2].key == "p/u/d.vmdk.part2" and "data" not in repr(parts[0])


def test_exact_multiple_has_no_empty_last_part() -> None:
    parts = list(
        cut_into_parts([b"a" * 100, b"b" * 100], part_size=100, key_prefix="", basename="x")
    )
    assert [p.size for p in parts] == [100, 100]


def _uploader(s3, bucket, **kw):
    return StreamedUpload(
        s3, bucket, basename="d.vmdk", prefix="t", upload_id="u1", part_size=64 * 1024, **kw
    )


def _read_back(s3, bucket, plan) -> bytes:
    return b"".join(s3.get_object(Bucket=bucket, Key=part.key)["Body"].read() for part in plan)


def test_stream_uploads_then_resume_sends_only_what_differs(s3, bucket) -> None:
    data = os.urandom(64 * 1024 * 5) + bytes(64 * 1024 * 3) + os.urandom(1000)
    up = _uploader(s3, bucket, workers=3)
    stats = up.run(_chunks(data, [5000, 70_000]))
    plan = up.plan
    assert plan is not None and plan.file_bytes == len(data) and plan.count == 9
    assert _read_back(s3, bucket, plan) == data
    assert (stats.put, stats.kept, stats.parts) == (7, 0, 9)  # zero parts: one put, copies
    assert stats.copied == 2
    for part in plan:
        assert up.md5_hex(part.index) == hashlib.md5(data[part.start : part.end + 1]).hexdigest()
    # as after an interrupted run: part 1 missing, part 3 with other bytes
    s3.delete_object(Bucket=bucket, Key=plan.part(1).key)
    s3.put_object(Bucket=bucket, Key=plan.part(3).key, Body=b"x" * (64 * 1024))
    existing = list_existing(s3, bucket, plan.key_prefix)
    again = _uploader(s3, bucket, workers=2, existing=existing)
    stats = again.run(_chunks(data, [64 * 1024]))
    assert (stats.put, stats.kept) == (2, 7)
    assert _read_back(s3, bucket, plan) == data


def test_a_producer_error_stops_the_upload_and_leaves_no_plan(s3, bucket) -> None:
    def broken():
        yield os.urandom(64 * 1024 * 2)
        raise ImageError("disk.raw: cannot read data at byte 131072: Input/output error")

    up = _uploader(s3, bucket, workers=2)
    with pytest.raises(ImageError, match="Input/output error"):
        up.run(broken())
    assert up.plan is None  # nothing to verify or write a manifest for
    assert up.cancel.cancelled


def test_memory_is_bounded_by_the_queue(s3, bucket) -> None:
    """The producer never runs more than (workers + queue + 2) parts ahead of the sends."""
    gate = threading.Event()
    made = []
    sent = []

    class SlowS3:
        def __getattr__(self, name):
            return getattr(s3, name)

        def put_object(self, **kw):
            gate.wait(5)
            sent.append(kw["Key"])
            return s3.put_object(**kw)

    def producer():
        for i in range(12):
            made.append(i)
            yield os.urandom(64 * 1024)

    up = _uploader(SlowS3(), bucket, workers=2, queue_depth=1, cancel=CancelToken())
    worker = threading.Thread(target=up.run, args=(producer(),))
    worker.start()
    threading.Event().wait(0.5)
    ahead = len(made)
    gate.set()
    worker.join(30)
    assert ahead <= 2 + 1 + 2 and len(sent) == 12
