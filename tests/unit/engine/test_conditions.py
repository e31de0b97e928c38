"""Conditions and status patches built from the API models."""

from __future__ import annotations

from kurable.api.v1alpha1 import Condition
from kurable.engine import entities as E
from kurable.engine.conditions import same_status, updated_condition


def test_a_condition_keeps_its_transition_time_while_its_status_stays() -> None:
    first = updated_condition("Ready", "True", "Valid", "", 1, None, "t1")
    assert isinstance(first, Condition)
    same = updated_condition("Ready", "True", "Valid", "x", 2, [first.to_status()], "t2")
    flipped = updated_condition("Ready", "False", "Invalid", "y", 3, [same.to_status()], "t3")
    assert (same.last_transition_time, flipped.last_transition_time) == ("t1", "t3")
    assert same.to_status() == {
        "type": "Ready",
        "status": "True",
        "reason": "Valid",
        "message": "x",
        "lastTransitionTime": "t1",
        "observedGeneration": 2,
    }


def test_an_entity_status_patch_clears_what_no_longer_applies_with_nulls() -> None:
    status = E.project_status(
        E.Snapshot({"n": 1}), generation=None, previous_conditions=None, now="t"
    )
    assert status["message"] is None and status["lastEvent"] is None
    assert status["conditions"][0]["observedGeneration"] is None
    assert "kopf" not in status  # kopf's own bookkeeping is left alone


def test_a_status_is_the_same_whatever_its_null_fields_and_transition_times() -> None:
    written = {
        "phase": "Running",
        "output": None,
        "steps": [{"name": "w", "phase": "Waiting", "finishedAt": None}],
        "conditions": [
            {"type": "Succeeded", "status": "Unknown", "lastTransitionTime": "2026-01-01T00:00:00Z"}
        ],
    }
    # As stored after a merge patch: the nulls removed, another transition time.
    stored = {
        "phase": "Running",
        "steps": [{"name": "w", "phase": "Waiting"}],
        "conditions": [
            {"type": "Succeeded", "status": "Unknown", "lastTransitionTime": "2026-01-02T00:00:00Z"}
        ],
    }
    assert same_status(written, stored)
    assert not same_status({**written, "phase": "Succeeded"}, stored)
    assert not same_status(written, {**stored, "steps": [{"name": "w", "phase": "Running"}]})
    moved = {**stored, "conditions": [{"type": "Succeeded", "status": "True"}]}
    assert not same_status(written, moved)
