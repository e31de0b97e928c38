"""Passive runs: the timer heap, what wakes a parked run, when status is written."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kurable.engine.passive import (
    Timers,
    expiry_time,
    parks,
    status_write_delay,
    wake_fingerprint,
    wake_time,
)


def test_timers_come_due_earliest_first_and_once() -> None:
    timers = Timers()
    timers.set("b", 20.0)
    timers.set("a", 10.0)
    timers.set("c", 30.0)
    assert timers.next_at() == 10.0 and len(timers) == 3
    assert timers.due(5.0) == []
    assert timers.due(20.0) == ["a", "b"]
    assert timers.due(20.0) == []
    assert "c" in timers and "a" not in timers


def test_setting_a_timer_again_replaces_it_and_discarding_forgets_it() -> None:
    timers = Timers()
    timers.set("a", 10.0)
    timers.set("a", 50.0)  # later: the old entry must not fire
    timers.set("b", 20.0)
    timers.discard("b")
    assert timers.due(40.0) == []
    assert timers.next_at() == 50.0
    assert timers.due(50.0) == ["a"]
    assert timers.next_at() is None and len(timers) == 0


@given(st.lists(st.tuples(st.sampled_from("abcdef"), st.floats(0, 100) | st.none())))
def test_timers_agree_with_a_plain_table(operations: list[tuple[str, float | None]]) -> None:
    """Any sequence of sets (a time) and discards (None) leaves exactly the last time of
    each key, and `due` hands each out once, in time order."""
    timers = Timers()
    table: dict[str, float] = {}
    for key, at in operations:
        if at is None:
            timers.discard(key)
            table.pop(key, None)
        else:
            timers.set(key, at)
            table[key] = at
    assert timers.next_at() == (min(table.values()) if table else None)
    due = timers.due(50.0)
    assert sorted(due) == sorted(k for k, at in table.items() if at <= 50.0)
    assert [table[k] for k in due] == sorted(table[k] for k in due)
    rest = timers.due(100.0)
    assert sorted(rest) == sorted(k for k, at in table.items() if at > 50.0)
    assert [table[k] for k in rest] == sorted(table[k] for k in rest)
    assert len(timers) == 0


def workflow(**annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"generation": 1, "resourceVersion": "7", "annotations": annotations},
        "spec": {"suspend": False},
        "status": {"phase": "Running"},
    }


def test_a_status_patch_does_not_wake_a_parked_run() -> None:
    before = workflow(**{"kurable.dev/signals-consumed": "3"})
    after = copy.deepcopy(before)
    after["metadata"]["resourceVersion"] = "8"
    after["status"] = {"phase": "Running", "currentStep": "hold"}
    after["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    assert wake_fingerprint(after) == wake_fingerprint(before)


def test_a_signal_a_spec_change_or_a_deletion_wakes_a_parked_run() -> None:
    before = workflow()
    signalled = workflow(**{"kurable.dev/signal.GO": '{"ok": true}'})
    resent = workflow(**{"kurable.dev/signal.GO": '{"ok": false}'})
    suspended = workflow()
    suspended["metadata"]["generation"] = 2
    deleting = workflow()
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    prints = {wake_fingerprint(o) for o in (before, signalled, resent, suspended, deleting)}
    assert len(prints) == 5


def test_a_run_settling_writes_its_status_at_once_else_after_the_window() -> None:
    assert status_write_delay(0.1, 0.5, settled=True) == 0.0
    assert status_write_delay(0.1, 0.5, settled=False) == 0.4
    assert status_write_delay(2.0, 0.5, settled=False) == 0.0


def test_a_run_parks_only_with_nothing_in_flight_and_a_wait_worth_it() -> None:
    assert parks(None, acting=False, min_seconds=1.0)  # a signal, the spec
    assert parks(5.0, acting=False, min_seconds=1.0)
    assert not parks(0.2, acting=False, min_seconds=1.0)  # a quick retry sleeps in its task
    assert not parks(None, acting=True, min_seconds=1.0)  # an action's outcome is awaited


def test_wake_and_expiry_times_are_epoch_seconds() -> None:
    until = datetime(2026, 1, 1, tzinfo=UTC)
    assert wake_time(until) == until.timestamp()
    assert wake_time(None) is None
    assert expiry_time(60, "2026-01-01T00:00:00Z") == until.timestamp() + 60
    assert expiry_time(None, "2026-01-01T00:00:00Z") is None
    assert expiry_time(60, None) is None
