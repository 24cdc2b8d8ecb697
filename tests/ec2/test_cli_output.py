"""What tasks / import print: task text, change lines, and the non-TTY change filter."""

from __future__ import annotations

import io
import re
from typing import Any

from manifestkit.cli.tasks import ChangeFilter, TaskBars, format_change, format_task
from manifestkit.ec2 import ConversionTask


def _task(state: str = "active", message: str = "", done: int = 0, **kw: Any) -> ConversionTask:
    base: dict[str, Any] = {
        "id": "import-i-abcdefgh",
        "kind": "instance",
        "state": state,
        "status_message": message,
        "bytes_converted": done,
        "image_bytes": 1000,
        "image_format": "VMDK",
        "volume_gib": 2,
        "availability_zone": "us-east-1a",
        "instance_id": "i-1",
        "expiration_time": "2030-01-01T00:00:00Z",
    }
    base.update(kw)
    return ConversionTask(**base)


def test_format_task_active_and_completed() -> None:
    active = format_task(_task(message="Pending"))
    assert active.splitlines()[0] == "import-i-abcdefgh  active  Pending"
    assert "  volume     (assigned when the task completes)" in active
    assert "  expires    2030-01-01T00:00:00Z" in active
    done = format_task(_task("completed", done=1000, volume_ids=("vol-9",)))
    assert "  volume     vol-9" in done and "expires" not in done
    assert "1000 B of 1000 B (100%)" in done


def test_format_change_names_the_result() -> None:
    line = format_change(_task("completed", done=1000, volume_ids=("vol-9",)))
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d import-i-abcdefgh completed \[1000 B of 1000 B \(100%\)\] -> i-1 vol-9",
        line,
    )
    assert (
        format_change(_task("cancelled", "part 2 missing"))
        .split(" ", 1)[1]
        .startswith("import-i-abcdefgh cancelled: part 2 missing")
    )


def test_change_filter_reports_tenths_not_every_percent() -> None:
    news = ChangeFilter()
    seen = [
        news(_task(message=f"Progress: {p}%", done=p * 10))
        for p in (0, 1, 2, 9, 10, 11, 55, 56, 99, 100)
    ]
    assert seen == [True, False, False, False, True, False, True, False, True, True]
    assert news(_task("completed", done=1000)) is True
    assert news(_task("completed", done=1000)) is False


def test_task_bars_off_a_terminal_write_plain_lines() -> None:
    out = io.StringIO()  # not a TTY
    bars = TaskBars(quiet=False, stream=out)
    for p in range(0, 101, 5):
        task = _task(message=f"Progress: {p}%", done=p * 10)
        bars.poll([task])
        bars.change(task)
    bars.change(_task("completed", done=1000, volume_ids=("vol-9",)))
    bars.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 12  # 0%, 10%, ... 100% and completed: not 21 progress lines
    assert "\r" not in out.getvalue()


def test_task_bars_quiet_print_nothing() -> None:
    out = io.StringIO()
    bars = TaskBars(quiet=True, stream=out)
    bars.change(_task())
    assert out.getvalue() == ""


def test_change_filter_without_steps_reports_states_and_new_kinds_of_message() -> None:
    news = ChangeFilter(progress_steps=False)  # a progress bar shows the bytes
    seen = [news(_task(message=f"Progress: {p}%", done=p * 10)) for p in (0, 10, 50, 100)]
    assert seen == [True, False, False, False]
    assert news(_task(message="Validating image")) is True
    assert news(_task("completed", done=1000)) is True
