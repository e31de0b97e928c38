"""Which child runs a run no longer waits for: a pure function of its journal state.

A `workflow` step starts a child run (kurable.executor.actions.child) and waits for it.
The parent stops waiting when the step's visit ends without the child's result (its
attempt timed out for good, it failed otherwise), when the run is failing (it timed out,
was cancelled, a step failed: only compensations are awaited then), when a fan-out step
no longer drives the branch the step sits in (`failFast` closed it, or `onFailure` moved
on), and when the run has finished. A child the parent no longer waits for is cancelled
(`spec.cancel: true`): it runs its own compensations and ends `Cancelled`.

The executor lists the run's children (label `kurable.dev/parent-uid`) and cancels those
`children_to_cancel` names; it does so after each record that may abandon a step
(`may_abandon`), when it resumes a run, and before it journals the run's end, so that a
crash at any point still cancels every child before the run is recorded as finished.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from kurable.api.v1alpha1 import Step, WorkflowSpec

from . import records as r
from .decide import COMPENSATE_SUFFIX, compensation_step, locate
from .journal import IN_FLIGHT, TERMINAL_PHASES, Record, RunState
from .names import child_run_name

OPEN_PHASES = (*IN_FLIGHT, "Retrying")
"""A step visit in one of these phases is not over: a retry re-attaches to the same child."""


def has_children(spec: WorkflowSpec) -> bool:
    """Whether the definition has a `workflow` step anywhere (branches, forEach bodies
    and compensations included): only such runs can have children to cancel."""
    return _any_workflow(spec.steps or [])


def _any_workflow(steps: Sequence[Step]) -> bool:
    for step in steps:
        if step.workflow is not None:
            return True
        if step.compensate is not None and _any_workflow([step.compensate]):
            return True
        if step.parallel is not None and any(
            _any_workflow(branch.steps) for branch in step.parallel.branches
        ):
            return True
    return False


def may_abandon(record: Record) -> bool:
    """Whether journaling `record` may end the parent's wait for a child: a step failed
    for good (a `workflow` step, or a fan-out step closing its branches), or the run
    began failing. (The run's end is handled before its record: see the module doc.)"""
    data = record.data
    if isinstance(data, r.RunFailing):
        return True
    return isinstance(data, r.StepFailed) and not data.retry_at


def awaited_children(state: RunState) -> frozenset[str]:
    """The names of the child runs the run still waits for, or will wait for again.

    A `workflow` step's child is awaited while the step's visit is open (Running,
    Waiting, or Retrying: the next attempt re-attaches to the same child), the run is
    not failing (then only a compensation's child is awaited), and every fan-out step
    around it (a `parallel` branch, a `forEach` item) is still open. A finished run
    awaits nothing.
    """
    if state.spec is None or state.finished:
        return frozenset()
    parent = str(state.workflow.get("name", ""))
    awaited: set[str] = set()
    for name, current in state.steps.items():
        if current.phase not in OPEN_PHASES:
            continue
        if name.endswith(COMPENSATE_SUFFIX):
            if state.failing is None:
                continue
            original = locate(state, name[: -len(COMPENSATE_SUFFIX)])
            if original is None or original[0].compensate is None:
                continue
            step = compensation_step(original[0])
        else:
            if state.failing is not None:
                continue
            located = locate(state, name)
            if located is None:
                continue
            step, around = located
            if any(state.step(fan).phase not in OPEN_PHASES for fan in around):
                continue
        if step.workflow is not None:
            awaited.add(child_run_name(parent, step.name, max(1, current.visits)))
    return frozenset(awaited)


def children_to_cancel(
    listed: Iterable[Mapping[str, Any]], parent_uid: str, awaited: frozenset[str]
) -> list[str]:
    """Of the listed Workflows, the names to cancel: the children of the run `parent_uid`
    (by ownerReference) that have not ended (status phase), are not cancelled already
    (`spec.cancel`), and are not `awaited` (pass an empty set when the run ends)."""
    names = []
    for obj in listed:
        meta = obj.get("metadata") or {}
        owners = [o.get("uid") for o in meta.get("ownerReferences") or []]
        if parent_uid not in owners or meta.get("name") in awaited:
            continue
        if (obj.get("status") or {}).get("phase") in TERMINAL_PHASES:
            continue
        if (obj.get("spec") or {}).get("cancel") is True:
            continue
        names.append(str(meta.get("name")))
    return sorted(names)


def _spec(state: RunState) -> WorkflowSpec:
    assert state.spec is not None
    return state.spec
