"""Conditions and status patches built from the API models."""

from __future__ import annotations

from kurable.api.v1alpha1 import Condition
from kurable.engine import entities as E
from kurable.engine.conditions import updated_condition


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
