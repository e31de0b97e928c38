"""The pure tick logic of Schedules: next ticks (DST, month ends, every), jitter, catch-up
and the concurrency policies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from kurable.api.v1alpha1 import ScheduleSpec
from kurable.engine.schedules import (
    SCHEDULED_TIME_ANNOTATION,
    TRIGGER_LABEL,
    Cadence,
    ScheduledRun,
    apply_policy,
    jitter_offset,
    plan,
    run_body,
    run_name,
    runs_to_delete,
    schedule_problems,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ticks_between(cadence: Cadence, start: datetime, end: datetime) -> list[datetime]:
    found = []
    for tick in cadence.ticks(start):
        if tick >= end:
            return found
        found.append(tick)
    return found


# -- next ticks -----------------------------------------------------------------------------


def test_a_0230_berlin_daily_fires_once_on_the_spring_forward_day_at_0300() -> None:
    # 2026-03-29: Berlin's clocks jump from 02:00 to 03:00; 02:30 does not exist.
    daily = Cadence(cron="30 2 * * *", zone="Europe/Berlin")
    day = ticks_between(
        daily, datetime(2026, 3, 29, tzinfo=BERLIN), datetime(2026, 3, 30, tzinfo=BERLIN)
    )
    assert len(day) == 1
    assert day[0].astimezone(BERLIN).strftime("%H:%M %Z") == "03:00 CEST"
    # The days around keep 02:30 local.
    week = ticks_between(daily, utc(2026, 3, 26), utc(2026, 4, 2))
    assert [t.astimezone(BERLIN).strftime("%d %H:%M") for t in week] == [
        "26 02:30", "27 02:30", "28 02:30", "29 03:00", "30 02:30", "31 02:30", "01 02:30",
    ]  # fmt: skip


def test_a_0230_berlin_daily_fires_once_on_the_fall_back_day() -> None:
    # 2026-10-25: Berlin's clocks go back from 03:00 to 02:00; 02:30 happens twice.
    daily = Cadence(cron="30 2 * * *", zone="Europe/Berlin")
    day = ticks_between(
        daily, datetime(2026, 10, 25, tzinfo=BERLIN), datetime(2026, 10, 26, tzinfo=BERLIN)
    )
    assert day == [utc(2026, 10, 25, 0, 30)]  # 02:30 CEST, the first of the two
    week = ticks_between(daily, utc(2026, 10, 23), utc(2026, 10, 28))
    assert [t.isoformat() for t in week] == [
        "2026-10-23T00:30:00+00:00",
        "2026-10-24T00:30:00+00:00",
        "2026-10-25T00:30:00+00:00",
        "2026-10-26T01:30:00+00:00",
        "2026-10-27T01:30:00+00:00",
    ]


def test_a_tick_starting_from_inside_the_repeated_hour_is_never_earlier() -> None:
    # After the first 02:30 (CEST), from 02:10 CET (the second pass through the hour):
    # the next tick is tomorrow's, not the 02:30 already passed once.
    daily = Cadence(cron="30 2 * * *", zone="Europe/Berlin")
    inside = datetime(2026, 10, 25, 2, 10, fold=1, tzinfo=BERLIN)
    assert daily.next_tick(inside) == utc(2026, 10, 26, 1, 30)


def test_the_31st_fires_only_in_months_that_have_one_and_L_means_the_last_day() -> None:
    on_31st = Cadence(cron="0 12 31 * *")
    assert [t.month for t in islice(on_31st.ticks(utc(2026, 1, 1)), 7)] == [1, 3, 5, 7, 8, 10, 12]
    last_day = Cadence(cron="0 0 L * *")
    assert [t.day for t in islice(last_day.ticks(utc(2028, 1, 1)), 3)] == [31, 29, 31]


def test_macros_stand_for_their_five_fields() -> None:
    assert Cadence(cron="@daily").next_tick(utc(2026, 5, 1, 13)) == utc(2026, 5, 2)
    assert Cadence(cron="@hourly").next_tick(utc(2026, 5, 1, 13, 5)) == utc(2026, 5, 1, 14)
    assert Cadence(cron="@monthly").next_tick(utc(2026, 5, 1, 0, 1)) == utc(2026, 6, 1)


def test_every_ticks_on_multiples_of_the_interval_since_the_epoch() -> None:
    quarter = Cadence(interval=900)
    assert list(islice(quarter.ticks(utc(2026, 5, 1, 10, 7, 13)), 3)) == [
        utc(2026, 5, 1, 10, 15),
        utc(2026, 5, 1, 10, 30),
        utc(2026, 5, 1, 10, 45),
    ]
    # Strictly after: a tick is never handed out twice.
    assert quarter.next_tick(utc(2026, 5, 1, 10, 15)) == utc(2026, 5, 1, 10, 30)
    two = Cadence(interval=2)
    assert two.next_tick(utc(2026, 5, 1, 0, 0, 1, 500_000)) == utc(2026, 5, 1, 0, 0, 2)


def test_six_field_crons_tick_by_the_second() -> None:
    every_ten = Cadence(cron="*/10 * * * * *")
    assert list(islice(every_ten.ticks(utc(2026, 5, 1, 0, 0, 3)), 2)) == [
        utc(2026, 5, 1, 0, 0, 10),
        utc(2026, 5, 1, 0, 0, 20),
    ]


# -- validation -----------------------------------------------------------------------------


def test_a_bad_cron_an_unknown_zone_and_a_bad_input_expression_name_their_fields() -> None:
    problems = schedule_problems(
        {
            "cron": "61 * * * *",
            "timeZone": "Europe/Atlantis",
            "templateRef": {"name": "t"},
            "input": {"day": "${ tick.time }"},
        }
    )
    by_field = {p.path: p.message for p in problems}
    assert set(by_field) == {"spec.cron", "spec.timeZone", "spec.input.day"}
    assert "Bad minute" in by_field["spec.cron"]
    assert "Europe/Atlantis" in by_field["spec.timeZone"]
    assert "only schedule can be used" in by_field["spec.input.day"]


def test_a_missing_template_ref_and_sub_second_intervals_are_problems() -> None:
    assert [p.path for p in schedule_problems({"every": "1m"})] == ["spec"]
    assert "templateRef" in schedule_problems({"every": "1m"})[0].message
    half = schedule_problems({"every": "1500ms", "templateRef": {"name": "t"}})
    assert [p.path for p in half] == ["spec.every"]


def test_a_valid_schedule_has_no_problems() -> None:
    spec = {
        "cron": "@daily",
        "timeZone": "America/New_York",
        "jitter": "30s",
        "templateRef": {"name": "t"},
        "input": {"day": "${ schedule.time }", "who": "${ schedule.name }"},
    }
    assert schedule_problems(spec) == []


# -- jitter, names, bodies --------------------------------------------------------------------


def test_jitter_is_deterministic_per_schedule_and_tick_and_within_its_bound() -> None:
    tick = utc(2026, 12, 1, 1, 30)
    first = jitter_offset("uid-1", tick, 30.0)
    assert first == jitter_offset("uid-1", tick, 30.0)
    assert 0 <= first < 30
    offsets = {jitter_offset("uid-1", tick + timedelta(days=d), 30.0) for d in range(50)}
    assert len(offsets) > 40  # spread, not one constant
    assert all(0 <= o < 30 for o in offsets)
    assert jitter_offset("uid-2", tick, 30.0) != first
    assert jitter_offset("uid-1", tick, 0) == 0


def test_a_jittered_tick_is_due_only_after_its_offset_and_keeps_its_name() -> None:
    cadence = Cadence(interval=60)
    tick = utc(2026, 5, 1, 10, 1)
    offset = jitter_offset("u", tick, 50.0)
    before = plan(
        cadence, uid="u", after=utc(2026, 5, 1, 10), now=tick + timedelta(seconds=offset - 0.01),
        jitter=50.0,
    )  # fmt: skip
    assert before.start == ()
    assert before.next_tick == tick
    assert before.next_due == tick + timedelta(seconds=offset)
    after = plan(
        cadence, uid="u", after=utc(2026, 5, 1, 10), now=tick + timedelta(seconds=offset),
        jitter=50.0,
    )  # fmt: skip
    assert after.start == (tick,)


def test_run_names_follow_the_tick_in_utc_and_stay_valid_when_long() -> None:
    assert run_name("nightly-settlement", utc(2026, 12, 1, 1, 30)) == (
        "nightly-settlement-20261201-0130z"
    )
    assert run_name("fast", utc(2026, 12, 1, 1, 30, 2)) == "fast-20261201-013002z"
    long = run_name("x" * 80, utc(2026, 12, 1, 1, 30))
    assert len(long) <= 63
    assert long != run_name("x" * 80, utc(2026, 12, 1, 1, 31))


def test_a_runs_body_is_owned_labelled_annotated_and_its_input_rendered() -> None:
    spec = ScheduleSpec.model_validate(
        {"every": "1h", "templateRef": {"name": "settle"}, "input": {"day": "${ schedule.time }",
         "by": "${ schedule.name }"}}
    )  # fmt: skip
    schedule = {"metadata": {"name": "nightly", "uid": "u-1"}}
    body = run_body(schedule, spec, utc(2026, 12, 1, 1))
    meta = body["metadata"]
    assert meta["name"] == "nightly-20261201-0100z"
    assert meta["labels"] == {"kurable.dev/schedule": "nightly", "kurable.dev/schedule-uid": "u-1"}
    assert meta["annotations"] == {SCHEDULED_TIME_ANNOTATION: "2026-12-01T01:00:00Z"}
    assert meta["ownerReferences"][0]["uid"] == "u-1"
    assert meta["ownerReferences"][0]["kind"] == "Schedule"
    assert body["spec"] == {
        "templateRef": {"name": "settle"},
        "input": {"day": "2026-12-01T01:00:00Z", "by": "nightly"},
    }
    manual = run_body(schedule, spec, utc(2026, 12, 1, 1, 2, 3), trigger="manual")
    assert manual["metadata"]["name"] == "nightly-manual-20261201-010203z"
    assert manual["metadata"]["labels"][TRIGGER_LABEL] == "manual"


# -- catch-up ---------------------------------------------------------------------------------


def test_missed_ticks_inside_the_catchup_window_start_and_older_ones_are_skipped() -> None:
    every_minute = Cadence(interval=60)
    # The operator was down from 10:00 to 10:10; the window is 3m.
    decided = plan(
        every_minute, uid="u", after=utc(2026, 5, 1, 10), now=utc(2026, 5, 1, 10, 10, 30),
        window=180,
    )  # fmt: skip
    assert decided.start == (
        utc(2026, 5, 1, 10, 8),
        utc(2026, 5, 1, 10, 9),
        utc(2026, 5, 1, 10, 10),
    )
    (skipped,) = decided.skipped
    assert skipped.reason == "OutsideCatchupWindow"
    assert (skipped.count, skipped.first, skipped.last) == (
        7,
        utc(2026, 5, 1, 10, 1),
        utc(2026, 5, 1, 10, 7),
    )
    assert decided.handled == utc(2026, 5, 1, 10, 10)
    assert decided.next_tick == utc(2026, 5, 1, 10, 11)
    # The next pass, from where this one ended, starts nothing twice.
    again = plan(
        every_minute, uid="u", after=decided.handled, now=utc(2026, 5, 1, 10, 10, 40), window=180
    )
    assert again.start == () and again.skipped == ()


def test_a_long_outage_is_skipped_without_visiting_each_tick() -> None:
    every_second = Cadence(interval=1)
    decided = plan(every_second, uid="u", after=utc(2026, 1, 1), now=utc(2026, 2, 1), window=2)
    (skipped,) = decided.skipped
    assert skipped.count == 31 * 86400 - 3
    assert decided.start == (
        utc(2026, 1, 31, 23, 59, 58),
        utc(2026, 1, 31, 23, 59, 59),
        utc(2026, 2, 1),
    )


def test_a_cron_catches_up_inside_its_window() -> None:
    hourly = Cadence(cron="0 * * * *")
    decided = plan(hourly, uid="u", after=utc(2026, 5, 1, 0, 30), now=utc(2026, 5, 1, 5, 10),
                   window=2 * 3600)  # fmt: skip
    assert decided.start == (utc(2026, 5, 1, 4), utc(2026, 5, 1, 5))
    assert decided.skipped_counts == {"OutsideCatchupWindow": 3}


def test_suspended_ticks_are_skipped_and_the_cursor_moves_past_them() -> None:
    decided = plan(
        Cadence(interval=10), uid="u", after=utc(2026, 5, 1), now=utc(2026, 5, 1, 0, 1),
        suspended=True,
    )  # fmt: skip
    assert decided.start == ()
    assert decided.skipped_counts == {"Suspended": 6}
    assert decided.handled == utc(2026, 5, 1, 0, 1)


# -- concurrency policies ------------------------------------------------------------------------

T1, T2, T3 = utc(2026, 5, 1, 1), utc(2026, 5, 1, 2), utc(2026, 5, 1, 3)


def test_allow_starts_every_due_tick_whatever_is_active() -> None:
    decided = apply_policy("Allow", [T1, T2], active=3)
    assert decided.start == (T1, T2) and decided.skipped == () and not decided.cancel_active


def test_forbid_skips_while_a_run_is_active_and_starts_one_when_none_is() -> None:
    busy = apply_policy("Forbid", [T1, T2], active=1)
    assert busy.start == () and busy.skipped == ((T1, "Forbid"), (T2, "Forbid"))
    idle = apply_policy("Forbid", [T1, T2, T3], active=0)
    assert idle.start == (T1,) and idle.skipped == ((T2, "Forbid"), (T3, "Forbid"))


def test_replace_cancels_the_active_runs_and_starts_the_latest_tick() -> None:
    busy = apply_policy("Replace", [T1, T2], active=2)
    assert busy.start == (T2,) and busy.skipped == ((T1, "Replaced"),) and busy.cancel_active
    idle = apply_policy("Replace", [T1], active=0)
    assert idle.start == (T1,) and not idle.cancel_active
    assert apply_policy("Replace", [], active=1) == apply_policy("Replace", [], active=0)


def test_buffer_one_keeps_one_tick_waiting_and_starts_it_when_the_active_run_ends() -> None:
    busy = apply_policy("BufferOne", [T1, T2, T3], active=1)
    assert busy.start == ()
    assert busy.buffered == T1
    assert busy.skipped == ((T2, "BufferFull"), (T3, "BufferFull"))
    # The active run ended: the buffered tick starts first, the next due one waits.
    later = utc(2026, 5, 1, 4)
    freed = apply_policy("BufferOne", [later], active=0, buffered=T1)
    assert freed.start == (T1,) and freed.buffered == later and freed.skipped == ()
    idle = apply_policy("BufferOne", [later], active=0)
    assert idle.start == (later,) and idle.buffered is None


def test_a_pass_applies_the_policy_to_the_ticks_due() -> None:
    decided = plan(
        Cadence(interval=60), uid="u", after=utc(2026, 5, 1, 10), now=utc(2026, 5, 1, 10, 2),
        policy="Forbid", active=1,
    )  # fmt: skip
    assert decided.start == ()
    assert decided.skipped_counts == {"Forbid": 2}
    assert decided.handled == utc(2026, 5, 1, 10, 2)


# -- the runs: cursor and history --------------------------------------------------------------


def run(name: str, tick: datetime | None, phase: str | None, finished: str | None = None,
        trigger: str | None = None) -> ScheduledRun:  # fmt: skip
    return ScheduledRun(name, tick, phase, finished, trigger)


def test_a_replayed_pass_recovers_the_ticks_whose_runs_exist_instead_of_deciding_again() -> None:
    # A pass started the run of 10:01, then crashed before it recorded that in status.
    # Replayed at 10:09 with a 5m window and Forbid: 10:01 is started (its run exists),
    # not "outside the window" nor "forbidden by its own run".
    every_minute = Cadence(interval=60)
    replay = plan(
        every_minute, uid="u", after=utc(2026, 5, 1, 10), now=utc(2026, 5, 1, 10, 9),
        window=300, policy="Forbid", active=1, existing=frozenset({utc(2026, 5, 1, 10, 1)}),
    )  # fmt: skip
    assert replay.recovered == (utc(2026, 5, 1, 10, 1),)
    assert replay.start == ()
    assert replay.skipped_counts == {"OutsideCatchupWindow": 2, "Forbid": 6}
    # Inside the window, a recovered tick is not started again either.
    inside = plan(
        every_minute, uid="u", after=utc(2026, 5, 1, 10), now=utc(2026, 5, 1, 10, 2),
        existing=frozenset({utc(2026, 5, 1, 10, 1)}),
    )  # fmt: skip
    assert inside.recovered == (utc(2026, 5, 1, 10, 1),)
    assert inside.start == (utc(2026, 5, 1, 10, 2),)


def test_history_limits_delete_the_oldest_finished_runs_per_outcome() -> None:
    runs = [
        run("s1", T1, "Succeeded", "2026-05-01T01:00:05Z"),
        run("s2", T2, "Succeeded", "2026-05-01T02:00:05Z"),
        run("s3", T3, "Succeeded", "2026-05-01T03:00:05Z"),
        run("f1", T1, "Failed", "2026-05-01T01:00:06Z"),
        run("c1", T2, "Cancelled", "2026-05-01T02:00:06Z"),
        run("r1", T3, "Running"),
        run("p1", T3, None),
    ]
    assert runs_to_delete(runs, successful_limit=2, failed_limit=1) == ["s1", "f1"]
    assert runs_to_delete(runs, successful_limit=0, failed_limit=0) == [
        "s1", "f1", "s2", "c1", "s3",
    ]  # fmt: skip
    assert runs_to_delete(runs, successful_limit=5, failed_limit=5) == []


def test_a_listed_run_reads_its_tick_and_only_owned_runs_count() -> None:
    from kurable.engine.schedules import owned_runs

    listed = [
        {
            "metadata": {
                "name": "n-1",
                "annotations": {SCHEDULED_TIME_ANNOTATION: "2026-05-01T01:00:00Z"},
                "ownerReferences": [{"uid": "mine"}],
            },
            "status": {"phase": "Running"},
        },
        {"metadata": {"name": "n-2", "ownerReferences": [{"uid": "other"}]}},
    ]
    (only,) = owned_runs(listed, "mine")
    assert (only.name, only.tick, only.active) == ("n-1", T1, True)


@pytest.mark.parametrize("policy", ["Allow", "Forbid", "Replace", "BufferOne"])
def test_no_policy_starts_a_tick_twice_across_passes(policy: str) -> None:
    cadence = Cadence(interval=60)
    after, started = utc(2026, 5, 1), []
    buffered = None
    for minute in range(1, 30, 7):
        decided = plan(
            cadence, uid="u", after=after, now=utc(2026, 5, 1, 0, minute), policy=policy,  # type: ignore[arg-type]
            active=len(started) % 2, buffered=buffered,
        )  # fmt: skip
        started += decided.start
        buffered = decided.buffered
        after = decided.handled or after
    assert len(started) == len(set(started))
