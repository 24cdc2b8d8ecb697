from itertools import pairwise

import pytest

from manifestkit.errors import UsageError
from manifestkit.parts import PartPlan


@pytest.mark.parametrize("size,part", [(1, 1), (10, 3), (10, 5), (10, 10), (10, 11), (12345, 512)])
def test_ranges_are_contiguous_inclusive_and_cover_the_file(size, part):
    plan = PartPlan.for_file("/x/disk.vmdk", size, part_size=part, upload_id="u")
    parts = list(plan)
    assert len(parts) == plan.count == len(range(0, size, part))
    assert parts[0].start == 0 and parts[-1].end == size - 1
    for a, b in pairwise(parts):
        assert b.start == a.end + 1 and a.size == part
    assert sum(p.size for p in parts) == size


def test_keys_use_the_basename_and_prefix():
    plan = PartPlan.for_file(
        "/some/dir/disk.vmdk", 30, part_size=10, prefix="/imports/", upload_id="u1"
    )
    assert plan.manifest_key == "imports/u1/disk.vmdkmanifest.xml"
    assert [p.key for p in plan] == [f"imports/u1/disk.vmdk.part{i}" for i in range(3)]
    assert PartPlan.for_file("d.raw", 1, upload_id="u").manifest_key == "u/d.rawmanifest.xml"


@pytest.mark.parametrize("part", [0, -1, 6 * 1024**3])
def test_absurd_part_sizes_are_refused(part):
    with pytest.raises(UsageError):
        PartPlan.for_file("d.raw", 100, part_size=part)


def test_too_many_parts_refused():
    with pytest.raises(UsageError, match="parts"):
        PartPlan.for_file("d.raw", 2 * 1024**4, part_size=1024)


@pytest.mark.parametrize(
    ("prefix", "upload_id"), [("../up", None), ("a/./b", None), ("", "../../x"), ("", ".")]
)
def test_dot_segments_in_keys_are_refused(prefix, upload_id):
    """HTTP clients resolve /../ and /./ in a URL path before sending it (RFC 3986 §5.2.4), so
    the importer would fetch another key than the one signed and uploaded."""
    with pytest.raises(UsageError, match="'.' or '..'"):
        PartPlan.for_file("disk.raw", 1024, prefix=prefix, upload_id=upload_id)
    assert PartPlan.for_file("disk.raw", 1024, prefix="a.b/..c").key_prefix.startswith("a.b/..c/")
