"""The one table of step performers agrees with the Step model."""

from __future__ import annotations

from kurable.api.v1alpha1.workflow import ACTIONS
from kurable.executor.actions import PERFORMERS


def test_every_performer_is_keyed_by_a_step_kind_of_the_model() -> None:
    assert set(PERFORMERS) <= set(ACTIONS)


def test_the_kinds_with_outside_effects_have_a_performer_each() -> None:
    assert set(PERFORMERS) == {"http", "entity", "workflow", "emit", "view"}
    assert len({id(p) for p in PERFORMERS.values()}) == len(PERFORMERS)
