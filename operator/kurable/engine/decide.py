"""What a run does next: a pure function of (definition, journal state, spec flags, now).

`next_decision` never performs I/O. It answers with one of:

- `Commit`: a record to append to the journal (a timer started, a `set` step
  evaluated, a step skipped, the run finished). Everything needed is in the record.
- `Act`: a step whose action has effects outside the journal (HTTP, entities, child
  workflows); the executor performs it and commits the outcome.
- `Wait`: nothing to do until a time (a timer) or an outside event (resume, signal).
- `Done`: the run is finished.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kurable.api.v1alpha1 import Step, WorkflowSpec, parse_duration

from . import expressions
from .journal import RecordType, RunState, now_rfc3339, parse_time

# Step kinds the engine runs itself, without effects outside the journal.
PURE_ACTIONS = ("set", "sleep")
MAX_TRANSITIONS = 10_000
"""Step transitions a run may make; a `next` loop that never ends fails clearly."""


@dataclass(frozen=True)
class Commit:
    """Append this record."""

    type: RecordType
    step: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Act:
    """Perform this step's action (attempt n), then commit its outcome."""

    step: Step
    attempt: int


@dataclass(frozen=True)
class Wait:
    """Nothing to do before `until` (None: until something outside changes)."""

    until: datetime | None
    reason: str


@dataclass(frozen=True)
class Done:
    """The run is finished."""


Decision = Commit | Act | Wait | Done


@dataclass(frozen=True)
class Flags:
    """The spec fields a user may change while the run is in flight."""

    suspend: bool = False


def start_record(definition: WorkflowSpec, input: Any, workflow: dict[str, str]) -> Commit:
    """The first record of a run: pins the resolved definition it will run to the end."""
    steps = definition.steps or []
    return Commit(
        "WorkflowStarted",
        data={
            "definition": definition.to_wire(),
            "input": input,
            "workflow": workflow,
            "first": steps[0].name if steps else None,
        },
    )


def next_decision(state: RunState, now: datetime, flags: Flags = Flags()) -> Decision:
    """The next thing to do for a run in `state`."""
    if state.finished:
        return Done()
    assert state.definition is not None, "a run's journal starts with WorkflowStarted"
    definition = WorkflowSpec.model_validate(state.definition)
    steps = {s.name: s for s in definition.steps or []}

    if state.position is None:
        return _finish_succeeded(definition, state)
    if state.transitions >= MAX_TRANSITIONS:
        return _finish_failed(
            state.position,
            "TransitionLimit",
            f"{state.transitions} step transitions: an endless `next` loop? "
            f"(the limit is {MAX_TRANSITIONS})",
        )
    step = steps.get(state.position)
    if step is None:
        return _finish_failed(state.position, "UnknownStep", f"no step named {state.position!r}")

    current = state.step(step.name)
    in_flight = current.phase in ("Running", "Waiting")
    if not in_flight and current.phase == "Failed" and current.finished_at:
        # The step failed for good; nothing in the definition routes around it.
        return _finish_failed(step.name, "StepFailed", current.message or "step failed")
    if not in_flight and flags.suspend:
        return Wait(None, "Suspended")

    context = evaluation_context(state)
    if not in_flight and step.when is not None:
        try:
            run_it = expressions.condition(step.when, context)
        except expressions.ExpressionError as e:
            return _step_failed(step, 1, "ExpressionError", str(e.at(f"{step.name}.when")))
        if not run_it:
            # A skipped step has no effects, its `next` jump included.
            return Commit("StepSkipped", step.name, data={"next": _sequential(definition, step)})

    if step.set is not None:
        try:
            values = expressions.render(step.set, context, f"{step.name}.set")
        except expressions.ExpressionError as e:
            return _step_failed(step, 1, "ExpressionError", str(e))
        return Commit(
            "StepCompleted",
            step.name,
            attempt=1,
            data={"output": values, "vars": values, "next": _following(definition, step)},
        )

    if step.sleep is not None:
        if not in_flight:
            try:
                wake_at = _wake_time(step, context, now)
            except (ValueError, expressions.ExpressionError) as e:
                return _step_failed(step, 1, "InvalidTimer", f"{step.name}.sleep: {e}")
            return Commit("StepStarted", step.name, attempt=1, data={"wakeAt": wake_at})
        assert current.wake_at is not None
        due = parse_time(current.wake_at)
        if now < due:
            return Wait(due, f"sleeping until {current.wake_at}")
        return Commit(
            "StepCompleted",
            step.name,
            attempt=current.attempts,
            data={"output": {"wokeAt": now_rfc3339(now)}, "next": _following(definition, step)},
        )

    return _step_failed(
        step,
        1,
        "Unsupported",
        f"{step.name}: step kind {step.action!r} is not executed by this operator version",
    )


def evaluation_context(state: RunState) -> dict[str, Any]:
    """What expressions see: input, steps.<name>.output, vars, workflow."""
    return {
        "input": state.input,
        "vars": state.vars,
        "steps": {name: {"output": s.output, "phase": s.phase} for name, s in state.steps.items()},
        "workflow": state.workflow,
    }


def _following(definition: WorkflowSpec, step: Step) -> str | None:
    """Where the run goes after `step` completes: its `next`, else the step below it."""
    return step.next if step.next is not None else _sequential(definition, step)


def _sequential(definition: WorkflowSpec, step: Step) -> str | None:
    names = [s.name for s in definition.steps or []]
    index = names.index(step.name)
    return names[index + 1] if index + 1 < len(names) else None


def _wake_time(step: Step, context: dict[str, Any], now: datetime) -> str:
    assert step.sleep is not None
    if step.sleep.duration is not None:
        return now_rfc3339(now + parse_duration(step.sleep.duration))
    until = expressions.render(step.sleep.until, context)
    if not isinstance(until, str):
        raise ValueError(f"until must be an RFC 3339 timestamp, got {until!r}")
    return now_rfc3339(parse_time(until))


def _step_failed(step: Step, attempt: int, reason: str, message: str) -> Commit:
    return Commit(
        "StepFailed",
        step.name,
        attempt=attempt,
        data={"error": {"reason": reason, "message": message}, "next": step.name},
    )


def _finish_failed(step: str, reason: str, message: str) -> Commit:
    return Commit(
        "WorkflowFinished",
        data={"phase": "Failed", "error": {"step": step, "reason": reason, "message": message}},
    )


def _finish_succeeded(definition: WorkflowSpec, state: RunState) -> Commit:
    try:
        output = expressions.render(definition.output, evaluation_context(state), "output")
    except expressions.ExpressionError as e:
        return Commit(
            "WorkflowFinished",
            data={
                "phase": "Failed",
                "error": {"step": None, "reason": "ExpressionError", "message": str(e)},
            },
        )
    return Commit("WorkflowFinished", data={"phase": "Succeeded", "output": output})
