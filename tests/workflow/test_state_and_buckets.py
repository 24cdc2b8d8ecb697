"""The upload state file and the bucket checks, on their own."""

from __future__ import annotations

import json
import stat

import pytest

from manifestkit.errors import UsageError
from manifestkit.parts import PartPlan
from manifestkit.s3.bucket_checks import _normalise_location, ensure_bucket
from manifestkit.workflow.upload_state import (
    find_state,
    new_state,
    read_state,
    state_path_for,
    write_state,
)


def _state(tmp_path):
    image = tmp_path / "disk.raw"
    image.write_bytes(b"x" * 5000)
    plan = PartPlan.for_file(image, 5000, part_size=1000, prefix="p/q")
    return (
        image,
        plan,
        new_state(image, plan, bucket="b-1", region="eu-west-1", file_format="RAW", volume_gib=1),
    )


def test_state_round_trip_is_0600_and_finds_the_plan_again(tmp_path):
    image, plan, state = _state(tmp_path)
    path = state_path_for(image, None)
    assert path == tmp_path / "disk.raw.manifestkit-state.json"
    write_state(path, state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found_path, found = find_state(image, None)
    assert found_path == path and found == state
    assert found.plan() == plan and found.manifest_key == plan.manifest_key
    assert [p.name for p in tmp_path.iterdir()] == ["disk.raw", path.name]  # no temp left


def test_state_dir_is_keyed_by_the_absolute_path(tmp_path):
    image, _, state = _state(tmp_path)
    other = tmp_path / "sub"
    other.mkdir()
    twin = other / "disk.raw"
    twin.write_bytes(b"y")
    states = tmp_path / "states"
    assert state_path_for(image, states) != state_path_for(twin, states)
    write_state(state_path_for(image, states), state)
    assert find_state(image, states)[1] == state
    assert find_state(twin, states) is None


@pytest.mark.parametrize(
    "content", ["", "{", "[]", '{"version": 99}', '{"version": 1}', '{"version": 1, "evil": 1}']
)
def test_a_broken_state_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "x.manifestkit-state.json"
    path.write_text(content)
    with pytest.raises(UsageError) as caught:
        read_state(path)
    assert str(path) in str(caught.value) and caught.value.exit_code == 2


def test_state_file_holds_no_url(tmp_path):
    image, _, state = _state(tmp_path)
    write_state(tmp_path / "s.json", state)
    assert "http" not in json.dumps(json.loads((tmp_path / "s.json").read_text()))


def test_location_constraints():
    assert _normalise_location(None) == "us-east-1"
    assert _normalise_location("") == "us-east-1"
    assert _normalise_location("EU") == "eu-west-1"
    assert _normalise_location("ap-south-1") == "ap-south-1"


def test_ensure_bucket_against_the_sandbox(s3, bucket):
    assert ensure_bucket(s3, bucket, ec2_region="us-east-1") == "us-east-1"
    with pytest.raises(UsageError, match="is in us-east-1 but the import runs in eu-west-1"):
        ensure_bucket(s3, bucket, ec2_region="eu-west-1")
    assert ensure_bucket(s3, bucket, ec2_region="eu-west-1", ignore_region_affinity=True) == (
        "us-east-1"
    )
