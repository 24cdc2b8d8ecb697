"""Listing-based part checks: key order, the merge with the plan, and bounded memory."""

from __future__ import annotations

import tracemalloc
from typing import Any

import pytest

from manifestkit.parts import PartPlan
from manifestkit.s3.part_listing import (
    ListingRefused,
    RemoteObject,
    iter_listing,
    lexicographic_indices,
    merge_with_plan,
    parts_in_key_order,
)
from manifestkit.s3.part_upload import RemoteParts, list_existing


@pytest.mark.parametrize("count", [*range(0, 130), 999, 1000, 1001, 10_000, 12_345])
def test_indices_come_in_string_order(count):
    assert [str(i) for i in lexicographic_indices(count)] == sorted(str(i) for i in range(count))


def test_part_keys_in_the_order_s3_lists_them():
    plan = PartPlan(file_bytes=1234, part_size=10, basename="disk.vmdk", upload_id="u")
    keys = [p.key for p in parts_in_key_order(plan)]
    # UTF-8 binary order, as S3 lists (here: bytes sort of the encoded keys)
    assert keys == sorted(keys, key=lambda k: k.encode())
    assert keys[:3] == ["u/disk.vmdk.part0", "u/disk.vmdk.part1", "u/disk.vmdk.part10"]
    assert len(set(keys)) == plan.count == 124


class _Pages:
    """A stand-in for boto3's list_objects_v2 paginator over generated keys (no map kept)."""

    def __init__(self, keys, objects, *, page=1000, error=None):
        self.keys, self.objects, self.page, self.error = keys, objects, page, error
        self.pages = 0

    def get_paginator(self, name):
        assert name == "list_objects_v2"
        return self

    def paginate(self, **kwargs):
        if self.error is not None:
            raise self.error
        batch = []
        for key in self.keys():
            batch.append(self.objects(key))
            if len(batch) == self.page:
                self.pages += 1
                yield {"Contents": batch}
                batch = []
        if batch:
            self.pages += 1
            yield {"Contents": batch}


def _listing_of(plan, *, skip=(), extra=(), size=None):
    def keys():
        for part in parts_in_key_order(plan):
            if part.index not in skip:
                yield part.key
        yield from extra

    def objects(key):
        index = int(key.rsplit(".part", 1)[1]) if ".part" in key else 0
        return {"Key": key, "Size": size or plan.part(index).size, "ETag": f'"{index:032x}"'}

    return keys, objects


def test_merge_finds_missing_parts_and_skips_other_keys():
    plan = PartPlan(file_bytes=250, part_size=10, basename="d", upload_id="u")
    keys, objects = _listing_of(plan, skip={0, 12, 24}, extra=["u/dmanifest.xml"])
    s3 = _Pages(keys, objects, page=7)
    seen = {
        part.index: remote for part, remote in merge_with_plan(plan, iter_listing(s3, "b", "u/"))
    }
    assert sorted(seen) == list(range(25))
    assert {i for i, r in seen.items() if r is None} == {0, 12, 24}
    assert seen[5] == RemoteObject(10, f"{5:032x}")


def test_unordered_listing_is_refused():
    plan = PartPlan(file_bytes=30, part_size=10, basename="d", upload_id="u")
    s3 = _Pages(lambda: iter(["u/d.part2", "u/d.part1"]), lambda k: {"Key": k, "Size": 10})
    with pytest.raises(ListingRefused, match="order"):
        list(merge_with_plan(plan, iter_listing(s3, "b", "u/")))


def test_resume_listing_memory_is_bounded_per_part():
    """~17 bytes a part (ETag + flag), no per-key objects (a dict of keys takes ~200 B a part)."""
    count = 20_000
    plan = PartPlan(file_bytes=count * 10, part_size=10, basename="d", upload_id="u")
    keys, objects = _listing_of(plan)
    s3: Any = _Pages(keys, objects)
    tracemalloc.start()
    found = list_existing(s3, "b", plan)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert isinstance(found, RemoteParts)
    assert s3.pages == count // 1000
    assert found.matches(plan.part(1234), bytes.fromhex(f"{1234:032x}"))
    assert not found.matches(plan.part(1234), bytes(16))
    assert peak < 17 * count + 1024 * 1024, peak  # a dict of keys: 4 MB
