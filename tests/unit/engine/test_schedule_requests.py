"""Trigger and backfill decisions (shared by the CLI and the endpoint): the range, its
ticks, and the concurrency policy against the schedule's active runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from kurable.engine import schedule_requests as requests
from kurable.engine.schedules import (
    SCHEDULE_UID_LABEL,
    SCHEDULED_TIME_ANNOTATION,
    TRIGGER_LABEL,
    Cadence,
    parse,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SCHEDULE = {"metadata": {"name": "hourly", "uid": "u-1"}}


def spec(policy: str) -> Any:
    parsed, _ = parse({"every": "1h", "templateRef": {"name": "t"}, "concurrencyPolicy": policy})
    return parsed


def run(name: str, phase: str | None, owner: str = "u-1") -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {SCHEDULE_UID_LABEL: owner},
            "ownerReferences": [{"uid": owner}],
        },
        "status": {"phase": phase} if phase else {},
    }


def test_parse_time_reads_rfc3339_with_an_offset_only() -> None:
    assert requests.parse_time("2026-12-01T01:30:00+01:00", "from") == datetime(
        2026, 12, 1, 0, 30, tzinfo=UTC
    )
    assert requests.parse_time("2026-12-01T00:00:00Z", "to") == datetime(2026, 12, 1, tzinfo=UTC)
    with pytest.raises(requests.BadRange) as bad:
        requests.parse_time("yesterday", "from")
    assert bad.value.field == "from" and "RFC 3339" in bad.value.problem
    with pytest.raises(requests.BadRange) as naive:
        requests.parse_time("2026-12-01T00:00:00", "to")
    assert naive.value.field == "to" and "no UTC offset" in naive.value.problem


def test_backfill_ticks_are_the_ticks_in_the_closed_range() -> None:
    found = requests.backfill_ticks(
        Cadence(interval=3600), datetime(2026, 12, 1, 9, tzinfo=UTC), NOW, NOW
    )
    assert found == [datetime(2026, 12, 1, h, tzinfo=UTC) for h in (9, 10, 11, 12)]


@pytest.mark.parametrize(
    ("start", "end", "problem"),
    [
        (NOW, datetime(2026, 12, 1, 11, tzinfo=UTC), "is before from"),
        (NOW, datetime(2026, 12, 1, 13, tzinfo=UTC), "is in the future"),
        (datetime(2026, 1, 1, tzinfo=UTC), NOW, "more than 1000 ticks"),
    ],
)
def test_a_bad_range_names_to(start: datetime, end: datetime, problem: str) -> None:
    with pytest.raises(requests.BadRange) as bad:
        requests.backfill_ticks(Cadence(interval=3600), start, end, NOW)
    assert bad.value.field == "to" and problem in bad.value.problem


TICKS = [datetime(2026, 12, 1, h, tzinfo=UTC) for h in (9, 10)]


def test_allow_starts_every_tick_named_by_it() -> None:
    planned = requests.plan(SCHEDULE, spec("Allow"), [run("x", "Running")], TICKS, "backfill")
    assert [b["metadata"]["name"] for b in planned.bodies] == [
        "hourly-20261201-0900z",
        "hourly-20261201-1000z",
    ]
    first = planned.bodies[0]["metadata"]
    assert first["labels"][TRIGGER_LABEL] == "backfill"
    assert first["annotations"][SCHEDULED_TIME_ANNOTATION] == "2026-12-01T09:00:00Z"
    assert planned.cancel == () and planned.skipped == ()


def test_forbid_skips_while_a_run_is_active_and_ignores_finished_and_foreign_runs() -> None:
    busy = requests.plan(SCHEDULE, spec("Forbid"), [run("x", "Running")], TICKS, "backfill")
    assert busy.bodies == ()
    assert [t for t, _ in busy.skipped] == TICKS
    assert "a run is active" in busy.skipped[0][1]
    idle = [run("x", "Succeeded"), run("y", "Running", owner="other")]
    free = requests.plan(SCHEDULE, spec("Forbid"), idle, TICKS, "backfill")
    assert len(free.bodies) == 1
    assert free.skipped == ((TICKS[1], "one run at a time (concurrencyPolicy Forbid)"),)


def test_buffer_one_acts_as_forbid_by_hand() -> None:
    planned = requests.plan(SCHEDULE, spec("BufferOne"), [run("x", "Running")], TICKS, "manual")
    assert planned.bodies == () and len(planned.skipped) == 2


def test_replace_cancels_the_active_runs_and_starts_the_last_tick() -> None:
    planned = requests.plan(SCHEDULE, spec("Replace"), [run("x", "Running")], TICKS, "manual")
    assert planned.cancel == ("x",)
    assert len(planned.bodies) == 1
    assert planned.bodies[0]["metadata"]["name"].startswith("hourly-manual-")
    assert planned.skipped == ((TICKS[0], "a later tick replaced it (concurrencyPolicy Replace)"),)
