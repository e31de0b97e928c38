"""A Workflow's status as a projection of its journal: small, whatever the run's length."""

from __future__ import annotations

import json
from typing import Any, cast

from kurable.api.v1alpha1 import Condition
from kurable.api.v1alpha1.workflow import (
    JournalRef,
    Phase,
    StepPhase,
    StepStatus,
    TemplateRef,
    WorkflowStatus,
)

from .conditions import ConditionStatus, updated_condition
from .decide import SUSPENDED, Decision, Wait, compensation_order
from .journal import RunState, StepState
from .messages import one_line

RECENT_STEPS = 20
"""How many step records status keeps; the journal keeps them all."""
OUTPUT_LIMIT = 1024
"""Outputs larger than this (as JSON) are shown as a reference to the journal."""


def shorten(value: Any, limit: int = OUTPUT_LIMIT) -> Any:
    """`value` itself when small, else a marker saying where the whole value is."""
    if value is None:
        return None
    text = json.dumps(value, separators=(",", ":"), default=str)
    if len(text) <= limit:
        return value
    return {"truncated": True, "bytes": len(text), "preview": text[:120], "see": "kurable history"}


def project(
    state: RunState,
    *,
    generation: int | None,
    decision: Decision | None,
    previous_conditions: list[dict[str, Any]] | None,
    now: str,
    journal_revision: int = 0,
) -> dict[str, Any]:
    """The status of a run in `state`, whose next decision is `decision`: a WorkflowStatus
    as a status patch (camelCase; every field set, null where it does not apply)."""
    suspended = isinstance(decision, Wait) and decision.reason.startswith(SUSPENDED)
    if state.finished:
        phase = state.phase
    elif state.failing is not None:
        phase = "Running"  # compensating; the terminal phase is not reached yet
    elif suspended:
        phase = "Suspended"
    elif state.started_at is None:
        phase = "Pending"
    else:
        phase = "Running"

    recent = sorted(
        state.steps.values(),
        key=lambda s: (s.finished_at is None, s.finished_at or s.started_at or ""),
    )[-RECENT_STEPS:]
    message = _message(state, phase, decision)
    message = one_line(message) if message is not None else None
    current = _current_step(state)
    status = WorkflowStatus(
        phase=cast(Phase, phase),
        reason=state.reason,
        current_step=current.name if current else None,
        attempts=current.attempts if current else None,
        template=TemplateRef.model_validate(state.template) if state.template else None,
        message=message,
        started_at=state.started_at,
        finished_at=state.finished_at,
        steps=[_step_status(s) for s in recent],
        steps_completed=sum(1 for s in state.steps.values() if s.phase in ("Succeeded", "Skipped")),
        output=shorten(state.output),
        error=_readable_error(state.error),
        journal=JournalRef(records=state.records, revision=journal_revision),
        observed_generation=generation,
        conditions=conditions(phase, message, state, generation, previous_conditions, now),
    )
    return status.to_status()


def _current_step(state: RunState) -> StepState | None:
    """The step in flight: a compensation while failing, else the run's position."""
    if state.finished:
        return None
    if state.failing is not None:
        active = [s for s in state.steps.values() if s.name.endswith(":compensate")]
        live = [s for s in active if s.in_flight or s.phase == "Retrying"]
        return live[-1] if live else None
    return state.step(state.position) if state.position else None


def _message(state: RunState, phase: str | None, decision: Decision | None) -> str | None:
    if state.failing is not None and not state.finished:
        cause = state.failing["error"]
        where = f"step {cause['step']}: " if cause.get("step") else ""
        doing = "compensating" if compensation_order(state) else "failing"
        return f"{doing} after: {where}{cause.get('message', '')}"
    if state.error:
        where = f"step {state.error['step']}: " if state.error.get("step") else ""
        return f"{where}{state.error.get('message', '')}"
    if phase == "Succeeded":
        return "all steps completed"
    if isinstance(decision, Wait):
        return decision.reason
    return None


def _step_status(step: StepState) -> StepStatus:
    return StepStatus(
        name=step.name,
        phase=cast(StepPhase, step.phase),
        attempts=step.attempts,
        started_at=step.started_at,
        finished_at=step.finished_at,
        wake_at=step.wake_at,
        output=shorten(step.output),
        message=_one_line_or_none((step.error or {}).get("message")),
    )


def _one_line_or_none(message: str | None) -> str | None:
    return one_line(message) if message else None


def _readable_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's error with its message as one bounded line (the journal keeps it whole)."""
    if error is None or error.get("message") is None:
        return error
    return {**error, "message": one_line(error["message"])}


def conditions(
    phase: str | None,
    message: str | None,
    state: RunState,
    generation: int | None,
    previous: list[dict[str, Any]] | None,
    now: str,
) -> list[Condition]:
    """Succeeded, Suspended and Stalled, keeping lastTransitionTime while a status stays
    the same."""
    succeeded: tuple[ConditionStatus, str]
    if phase == "Succeeded":
        succeeded = ("True", "Succeeded")
    elif phase in ("Failed", "Cancelled", "Invalid"):
        succeeded = ("False", state.reason or phase)
    else:
        succeeded = ("Unknown", phase or "Pending")
    wanted: dict[str, tuple[ConditionStatus, str, str]] = {
        "Succeeded": (succeeded[0], succeeded[1], message or ""),
        "Suspended": (
            ("True", "Suspended", "spec.suspend is true")
            if phase == "Suspended"
            else ("False", "NotSuspended", "")
        ),
        # The executor sets Stalled True (with why) when it cannot make progress.
        "Stalled": ("False", "Progressing", ""),
    }
    return [
        updated_condition(kind, status, reason, text, generation, previous, now)
        for kind, (status, reason, text) in wanted.items()
    ]
