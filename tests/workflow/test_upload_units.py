"""The pieces under the uploader: the bounded pool, hole detection, part-level retries."""

from __future__ import annotations

import threading
import time

import pytest

from manifestkit.aws import make_session
from manifestkit.errors import UploadError
from manifestkit.parts import PartPlan
from manifestkit.s3.part_upload import PartBody, PartUploader, default_workers
from manifestkit.s3.pool import run_bounded
from manifestkit.s3.zeroparts import ZeroBlocks, range_is_hole
from manifestkit.workflow.upload import upload_s3_client

from .faultproxy import FaultProxy
from .helpers import MiB, random_image


def test_pool_bounds_what_is_taken_from_the_producer():
    pulled = 0
    done = 0
    most_ahead = 0
    lock = threading.Lock()

    def items():
        nonlocal pulled, most_ahead
        for i in range(200):
            with lock:
                pulled += 1
                most_ahead = max(most_ahead, pulled - done)
            yield i

    def work(i):
        nonlocal done
        time.sleep(0.001)
        with lock:
            done += 1
        return i * 2

    results = {}
    run_bounded(items(), work, workers=3, queue_depth=4, on_result=results.__setitem__)
    assert results == {i: i * 2 for i in range(200)}
    # in flight (3) + queued (4) + the one the producer holds while the queue is full
    assert most_ahead <= 3 + 4 + 1


def test_pool_raises_the_first_error_and_stops_taking_items():
    pulled = []

    def items():
        for i in range(10_000):
            pulled.append(i)
            yield i

    def work(i):
        if i == 5:
            raise ValueError("part 5 broke")
        return i

    with pytest.raises(ValueError, match="part 5 broke"):
        run_bounded(items(), work, workers=2, queue_depth=2)
    assert len(pulled) < 100


def test_default_workers():
    assert default_workers(1) == 4 and default_workers(2) == 4
    assert default_workers(3) == 6 and default_workers(64) == 8


def test_range_is_hole_on_a_sparse_file(tmp_path):
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.seek(32 * MiB)
        f.write(b"x")
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        first = range_is_hole(fd, 0, 16 * MiB - 1)
        if first is None:
            pytest.skip("this file system does not answer SEEK_DATA")
        assert first is True
        assert range_is_hole(fd, 31 * MiB, 33 * MiB) is False
        assert range_is_hole(fd, 48 * MiB, 64 * MiB - 1) is True  # ENXIO: no data till EOF
    finally:
        os.close(fd)


def test_zero_blocks():
    zeros = ZeroBlocks()
    assert zeros.is_zero(bytes(1000)) and not zeros.is_zero(b"\0" * 999 + b"\1")
    import hashlib

    assert zeros.md5(1000) == hashlib.md5(bytes(1000)).digest()


def test_part_body_reads_whole_once_and_rewinds_for_a_retry():
    data = bytes(range(256)) * 1000
    body = PartBody(data)
    assert len(body) == len(data) and body.tell() == 0
    first = body.read(16384)  # urllib3 asks for 16 KiB: it gets the rest, no copy
    assert isinstance(first, memoryview) and first.obj is data and bytes(first) == data
    assert body.tell() == len(data) and not body.read(16384)
    assert body.seek(0) == 0 and bytes(body.read()) == data
    assert body.seek(-10, 2) == len(data) - 10 and bytes(body.read()) == data[-10:]
    assert body.seek(5) == 5 and body.seek(5, 1) == 10 and bytes(body.read()) == data[10:]


def test_each_put_sends_the_part_body_with_its_md5(tmp_path):
    import base64
    import hashlib

    image = random_image(tmp_path / "d.raw", 3 * MiB)
    plan = PartPlan(file_bytes=3 * MiB, part_size=MiB, basename="d.raw", prefix="p")
    sent = {}

    class Recorder:
        def put_object(self, **kwargs):
            body = kwargs["Body"]
            assert isinstance(body, PartBody) and kwargs["ContentLength"] == len(body)
            payload = bytes(body.read())
            sent[kwargs["Key"]] = payload
            md5 = hashlib.md5(payload)
            assert kwargs["ContentMD5"] == base64.b64encode(md5.digest()).decode()
            return {"ETag": f'"{md5.hexdigest()}"'}

    PartUploader(Recorder(), "b", image, plan, workers=2).run()
    whole = image.read_bytes()
    assert [sent[p.key] for p in plan] == [whole[p.start : p.end + 1] for p in plan]


def _uploader(s3server, bucket, image, proxy_url, plan, **kwargs):
    settings = s3server.settings(s3_endpoint_url=proxy_url)
    s3 = upload_s3_client(make_session(settings), settings, workers=2)
    return s3, PartUploader(s3, bucket, image, plan, workers=2, **kwargs)


def test_an_etag_mismatch_resends_the_part(s3server, bucket, tmp_path):
    image = random_image(tmp_path / "e.raw", 3 * MiB)
    plan = PartPlan.for_file(image, 3 * MiB, part_size=MiB)
    with FaultProxy(s3server.endpoint_url) as proxy:
        s3, uploader = _uploader(s3server, bucket, image, proxy.url, plan)
        lied = []

        def corrupt_first_etag(parsed, model, **_):
            if model.name == "PutObject" and not lied:
                lied.append(parsed["ETag"])
                parsed["ETag"] = '"00000000000000000000000000000000"'

        s3.meta.events.register("after-call.s3.PutObject", corrupt_first_etag)
        stats = uploader.run()
        assert stats.put == 3 and len(lied) == 1
        assert len(proxy.part_puts()) == 4  # one part went twice


def test_a_part_that_never_verifies_fails_with_exit_1(s3server, bucket, tmp_path, monkeypatch):
    import manifestkit.s3.part_upload as upload_module

    monkeypatch.setattr(upload_module, "_RETRY_BACKOFF", 0.01)
    image = random_image(tmp_path / "e.raw", MiB)
    plan = PartPlan.for_file(image, MiB, part_size=MiB)
    with FaultProxy(s3server.endpoint_url) as proxy:
        s3, uploader = _uploader(s3server, bucket, image, proxy.url, plan)

        def always_wrong(parsed, **_):
            parsed["ETag"] = '"00000000000000000000000000000000"'

        s3.meta.events.register("after-call.s3.PutObject", always_wrong)
        with pytest.raises(UploadError, match="failed after 3 attempts") as caught:
            uploader.run()
        assert caught.value.exit_code == 1
        assert len(proxy.part_puts()) == 3


class _FlakyS3:
    """A stub S3 client: the first PutObject fails with a 500, everything else works."""

    def __init__(self):
        import hashlib

        self._md5 = hashlib.md5
        self.lock = threading.Lock()
        self.objects: dict[str, bytes] = {}
        self.calls: list[tuple[str, str]] = []
        self.failed = False

    def put_object(self, *, Bucket, Key, Body, **_):  # noqa: N803 - boto3's names
        import botocore.exceptions

        with self.lock:
            self.calls.append(("put", Key))
            if not self.failed:
                self.failed = True
                raise botocore.exceptions.ClientError(
                    {"Error": {"Code": "InternalError", "Message": "try again"}}, "PutObject"
                )
            body = bytes(Body.read())  # a file object, as botocore's own Body is by then
            self.objects[Key] = body
        return {"ETag": f'"{self._md5(body).hexdigest()}"'}

    def copy_object(self, *, Bucket, Key, CopySource, **_):  # noqa: N803
        with self.lock:
            self.calls.append(("copy", Key))
            body = self.objects[CopySource["Key"]]
            self.objects[Key] = body
        return {"CopyObjectResult": {"ETag": f'"{self._md5(body).hexdigest()}"'}}


def test_a_failed_zero_source_hands_the_role_on(tmp_path, monkeypatch):
    import manifestkit.s3.part_upload as upload_module

    monkeypatch.setattr(upload_module, "_RETRY_BACKOFF", 0.01)
    image = tmp_path / "holes.raw"
    with open(image, "wb") as f:
        f.truncate(8 * 1024)
    plan = PartPlan.for_file(image, 8 * 1024, part_size=1024)
    s3 = _FlakyS3()
    stats = PartUploader(s3, "b", image, plan, workers=3).run()
    assert stats.put == 1 and stats.copied == 7
    assert sorted(s3.objects) == sorted(p.key for p in plan)
    assert all(body == bytes(1024) for body in s3.objects.values())
    assert sum(1 for kind, _ in s3.calls if kind == "put") == 2  # the failure, then one success
