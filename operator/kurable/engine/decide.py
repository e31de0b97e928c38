"""What a run does next: a pure function of (journal state, spec flags, now).

`next_decision` never performs I/O. It answers with one of:

- `Commit`: a record to append to the journal (an attempt starts, a `set` step is
  evaluated, a timer is due, a signal is taken, the run fails or finishes).
- `Act`: the attempt in flight has effects outside the journal (HTTP, an entity
  command, a child workflow); the executor performs it and commits `outcome(...)`.
- `Wait`: nothing to do until a time (a timer, a retry, a deadline) or an outside
  event (resume, a signal).
- `Done`: the run is finished.

Failure handling lives here too: retries with backoff (deterministic jitter, so a
replay decides the same), timeouts, `onFailure.goto`, and sagas: when a run fails,
times out or is cancelled, the compensations of completed steps run in reverse
order of completion, each with its own retry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from kurable.api.v1alpha1 import Step, WorkflowSpec, parse_duration
from kurable.api.v1alpha1.workflow import Retry

from . import expressions
from .journal import RecordType, RunState, StepState, now_rfc3339, parse_time

MAX_TRANSITIONS = 10_000
"""Step transitions a run may make; a `next` loop that never ends fails clearly."""

COMPENSATE_SUFFIX = ":compensate"
"""Compensation steps are journaled as `<step>:compensate` (no user name has a colon)."""

# Error kinds retried when `retryOn` does not say otherwise.
RETRYABLE = frozenset({"Timeout", "ConnectionError", "HttpServerError", "Unavailable"})


@dataclass(frozen=True)
class Commit:
    """Append this record."""

    type: RecordType
    step: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Act:
    """Perform the attempt in flight of `step`, then commit `outcome(...)`."""

    step: Step
    attempt: int
    deadline: datetime | None
    compensating: str | None = None
    """The step being compensated, when this is a compensation."""


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
    cancel: bool = False


@dataclass(frozen=True)
class StepError:
    """Why an attempt failed: a kind (for retryOn) and a message for people."""

    kind: str
    message: str
    retryable: bool | None = None
    """Overrides the kind's default (e.g. a 4xx listed in retryOnStatus)."""

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message}


def start_record(
    definition: WorkflowSpec,
    input: Any,
    workflow: dict[str, str],
    now: datetime,
    template: dict[str, Any] | None = None,
) -> Commit:
    """The first record of a run: pins the resolved definition it will run to the end."""
    steps = definition.steps or []
    data: dict[str, Any] = {
        "definition": definition.to_wire(),
        "input": input,
        "workflow": workflow,
        "first": steps[0].name if steps else None,
    }
    if definition.timeout:
        data["deadline"] = now_rfc3339(now + parse_duration(definition.timeout))
    if template is not None:
        data["template"] = template
    return Commit("WorkflowStarted", data=data)


def next_decision(state: RunState, now: datetime, flags: Flags = Flags()) -> Decision:
    """The next thing to do for a run in `state`."""
    if state.finished:
        return Done()
    assert state.spec is not None, "a run's journal starts with WorkflowStarted"

    if state.failing is None:
        if flags.cancel:
            return _run_failing("Cancelled", None, "Cancelled", "spec.cancel is true")
        if state.deadline is not None and now >= parse_time(state.deadline):
            return _run_failing(
                "Failed", None, "Timeout", f"the workflow timed out ({state.spec.timeout})"
            )
        return _forward(state, now, flags)
    return _compensate(state, now)


def outcome(
    state: RunState, act: Act, now: datetime, output: Any = None, error: StepError | None = None
) -> Commit:
    """The record that ends the attempt `act` with `output` or `error`."""
    if error is None:
        data: dict[str, Any] = {"output": output}
        if act.compensating is not None:
            data["of"] = act.compensating
        else:
            data["next"] = _following(_spec(state), act.step)
        return Commit("StepCompleted", act.step.name, act.attempt, data)
    return _failed(state, act.step, act.attempt, error, now, act.compensating)


def evaluation_context(state: RunState, **extra: Any) -> dict[str, Any]:
    """What expressions see: input, steps.<name>.output, vars, workflow."""
    return {
        "input": state.input,
        "vars": state.vars,
        "steps": {name: {"output": s.output, "phase": s.phase} for name, s in state.steps.items()},
        "workflow": state.workflow,
        **extra,
    }


def backoff_delay(retry: Retry, attempt: int, key: str) -> timedelta:
    """Delay before attempt `attempt + 1`: initial*factor^(attempt-1), capped, jittered.

    The jitter comes from a hash of `key` and the attempt, not from a random source,
    so that replaying a journal decides exactly the same retry time.
    """
    backoff = retry.backoff
    if backoff is None:
        initial, factor, cap, jitter = 1.0, 2.0, 300.0, 0.1
    else:
        initial = parse_duration(backoff.initial).total_seconds()
        factor, jitter = backoff.factor, backoff.jitter
        cap = parse_duration(backoff.max).total_seconds()
    base = min(cap, initial * factor ** (attempt - 1))
    digest = hashlib.sha256(f"{key}/{attempt}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # in [0, 1)
    return timedelta(seconds=max(0.0, base * (1 + jitter * (2 * unit - 1))))


def retry_policy(state: RunState, step: Step) -> Retry:
    """The step's retry policy, else the run's default, else one attempt."""
    return step.retry or _spec(state).retry or Retry()


def is_retryable(retry: Retry, error: StepError) -> bool:
    if retry.retry_on is not None:
        return error.kind in retry.retry_on
    if error.retryable is not None:
        return error.retryable
    return error.kind in RETRYABLE


def compensation_step(step: Step) -> Step:
    """The step that undoes `step`, named `<step>:compensate`."""
    assert step.compensate is not None
    body = Step.model_validate({**step.compensate, "name": "compensate"})
    return body.model_copy(update={"name": step.name + COMPENSATE_SUFFIX})


# -- moving forward ---------------------------------------------------------------------


def _forward(state: RunState, now: datetime, flags: Flags) -> Decision:
    spec = _spec(state)
    if state.position is None:
        return _finish_succeeded(state)
    if state.transitions >= MAX_TRANSITIONS:
        return _run_failing(
            "Failed",
            state.position,
            "TransitionLimit",
            f"{state.transitions} step transitions: an endless `next` loop? "
            f"(the limit is {MAX_TRANSITIONS})",
        )
    steps = {s.name: s for s in spec.steps or []}
    step = steps.get(state.position)
    if step is None:
        return _run_failing(
            "Failed", state.position, "UnknownStep", f"no step named {state.position!r}"
        )
    current = state.step(step.name)

    if current.in_flight or current.phase == "Retrying":
        return _continue(state, step, current, now)
    if current.phase == "Failed" and current.error is not None and current.finished_at:
        # Failed for good, and no onFailure moved the run elsewhere.
        message = current.error.get("message", "step failed")
        return _run_failing("Failed", step.name, "StepFailed", message)

    # A new visit of the step.
    if flags.suspend:
        return Wait(None, "Suspended")
    context = evaluation_context(state)
    if step.when is not None:
        try:
            run_it = expressions.condition(step.when, context)
        except expressions.ExpressionError as e:
            error = StepError("ExpressionError", str(e.at(f"{step.name}.when")))
            return _failed(state, step, 1, error, now)
        if not run_it:
            # A skipped step has no effects, its `next` jump included.
            return Commit("StepSkipped", step.name, data={"next": _sequential(spec, step)})
    return _begin(state, step, 1, now, None)


def _begin(
    state: RunState, step: Step, attempt: int, now: datetime, compensating: str | None
) -> Decision:
    """Start attempt `attempt` of `step`: evaluate it now, or journal its start."""
    context = evaluation_context(state)
    if step.set is not None:
        try:
            values = expressions.render(step.set, context, f"{step.name}.set")
        except expressions.ExpressionError as e:
            return _failed(
                state, step, attempt, StepError("ExpressionError", str(e)), now, compensating
            )
        data: dict[str, Any] = {"output": values}
        if compensating is None:
            data["vars"] = values
            data["next"] = _following(_spec(state), step)
        else:
            data["of"] = compensating
        return Commit("StepCompleted", step.name, attempt, data)

    if step.sleep is not None:
        try:
            wake_at = _wake_time(step, context, now)
        except (ValueError, expressions.ExpressionError) as e:
            error = StepError("InvalidTimer", f"{step.name}.sleep: {e}")
            return _failed(state, step, attempt, error, now, compensating)
        return Commit("StepStarted", step.name, attempt, {"wakeAt": wake_at})

    data = {}
    deadline = _attempt_deadline(state, step, now)
    if deadline is not None:
        data["deadline"] = now_rfc3339(deadline)
    if step.wait is not None:
        data["signal"] = step.wait.signal
    return Commit("StepStarted", step.name, attempt, data)


def _continue(
    state: RunState,
    step: Step,
    current: StepState,
    now: datetime,
    compensating: str | None = None,
) -> Decision:
    """The step has an attempt in flight, or a retry due."""
    if current.phase == "Retrying":
        assert current.wake_at is not None
        due = parse_time(current.wake_at)
        if now < due:
            return _wait(state, due, f"retrying {step.name} at {current.wake_at}")
        return _begin(state, step, current.attempts + 1, now, compensating)

    if step.sleep is not None:
        assert current.wake_at is not None
        due = parse_time(current.wake_at)
        if now < due:
            return _wait(state, due, f"sleeping until {current.wake_at}")
        return _complete(state, step, current.attempts, {"wokeAt": now_rfc3339(now)}, compensating)

    deadline = parse_time(current.deadline) if current.deadline else None
    if step.wait is not None:
        signal = state.pending_signal(step.wait.signal)
        if signal is not None:
            commit = _complete(state, step, current.attempts, signal.payload, compensating)
            return Commit(
                commit.type, commit.step, commit.attempt, {**commit.data, "consumed": signal.seq}
            )
        if deadline is not None and now >= deadline:
            error = StepError(
                "Timeout", f"no signal {step.wait.signal!r} within {step.wait.timeout}"
            )
            return _failed(state, step, current.attempts, error, now, compensating)
        return _wait(state, deadline, f"waiting for signal {step.wait.signal}")

    if deadline is not None and now >= deadline:
        error = StepError("Timeout", f"attempt {current.attempts} timed out")
        return _failed(state, step, current.attempts, error, now, compensating)
    return Act(step, current.attempts, deadline, compensating)


def _complete(
    state: RunState, step: Step, attempt: int, output: Any, compensating: str | None
) -> Commit:
    data: dict[str, Any] = {"output": output}
    if compensating is None:
        data["next"] = _following(_spec(state), step)
    else:
        data["of"] = compensating
    return Commit("StepCompleted", step.name, attempt, data)


def _failed(
    state: RunState,
    step: Step,
    attempt: int,
    error: StepError,
    now: datetime,
    compensating: str | None = None,
) -> Commit:
    """An attempt failed: retry later, go to onFailure, or fail the step for good."""
    retry = retry_policy(state, step)
    data: dict[str, Any] = {"error": error.to_json()}
    if attempt < retry.max_attempts and is_retryable(retry, error):
        key = f"{state.workflow.get('uid', '')}/{step.name}"
        data["retryAt"] = now_rfc3339(now + backoff_delay(retry, attempt, key))
        return Commit("StepFailed", step.name, attempt, data)
    if compensating is None:
        # Stay on the failed step (the run then fails) unless onFailure routes elsewhere.
        data["next"] = step.on_failure.goto if step.on_failure else step.name
    else:
        data["of"] = compensating
    return Commit("StepFailed", step.name, attempt, data)


# -- compensating -----------------------------------------------------------------------


def _compensate(state: RunState, now: datetime) -> Decision:
    """Undo completed steps in reverse order of completion; then finish."""
    assert state.failing is not None
    steps = {s.name: s for s in _spec(state).steps or []}
    ran_any = False
    for name in _compensation_order(state):
        ran_any = True
        if name in state.compensated:
            continue
        undo = compensation_step(steps[name])
        current = state.step(undo.name)
        if current.in_flight or current.phase == "Retrying":
            return _continue(state, undo, current, now, compensating=name)
        if current.phase == "Failed":
            message = (current.error or {}).get("message", "compensation failed")
            return _finish(
                state.failing["phase"],
                "CompensationFailed",
                error={
                    "step": undo.name,
                    "reason": "CompensationFailed",
                    "message": message,
                    "cause": state.failing["error"],
                },
            )
        return _begin(state, undo, 1, now, name)
    error = state.failing["error"]
    if ran_any:
        compensated = {**error, "reason": "Compensated", "cause": error.get("reason")}
        return _finish(state.failing["phase"], "Compensated", error=compensated)
    return _finish(state.failing["phase"], error.get("reason", "Failed"), error=error)


def _compensation_order(state: RunState) -> list[str]:
    """Completed steps that declare `compensate`, last completed first, each once."""
    steps = {s.name: s for s in _spec(state).steps or []}
    order: list[str] = []
    for name in reversed(state.completed):
        if name not in order and name in steps and steps[name].compensate is not None:
            order.append(name)
    return order


# -- helpers ----------------------------------------------------------------------------


def _spec(state: RunState) -> WorkflowSpec:
    assert state.spec is not None
    return state.spec


def _following(spec: WorkflowSpec, step: Step) -> str | None:
    """Where the run goes after `step` completes: its `next`, else the step below it."""
    return step.next if step.next is not None else _sequential(spec, step)


def _sequential(spec: WorkflowSpec, step: Step) -> str | None:
    names = [s.name for s in spec.steps or []]
    if step.name not in names:
        return None
    index = names.index(step.name)
    return names[index + 1] if index + 1 < len(names) else None


def _attempt_deadline(state: RunState, step: Step, now: datetime) -> datetime | None:
    """The earlier of the step's timeout (or a wait's) and the run's deadline."""
    candidates = []
    timeout = step.timeout or (step.wait.timeout if step.wait else None)
    if timeout:
        candidates.append(now + parse_duration(timeout))
    if state.deadline and state.failing is None:
        candidates.append(parse_time(state.deadline))
    return min(candidates) if candidates else None


def _wait(state: RunState, until: datetime | None, reason: str) -> Wait:
    """Wait, but wake up for the run's deadline too."""
    if state.deadline is not None and state.failing is None:
        deadline = parse_time(state.deadline)
        until = deadline if until is None else min(until, deadline)
    return Wait(until, reason)


def _wake_time(step: Step, context: dict[str, Any], now: datetime) -> str:
    assert step.sleep is not None
    if step.sleep.duration is not None:
        return now_rfc3339(now + parse_duration(step.sleep.duration))
    until = expressions.render(step.sleep.until, context)
    if not isinstance(until, str):
        raise ValueError(f"until must be an RFC 3339 timestamp, got {until!r}")
    return now_rfc3339(parse_time(until))


def _run_failing(phase: str, step: str | None, reason: str, message: str) -> Commit:
    return Commit(
        "RunFailing",
        data={"phase": phase, "error": {"step": step, "reason": reason, "message": message}},
    )


def _finish(
    phase: str, reason: str, output: Any = None, error: dict[str, Any] | None = None
) -> Commit:
    data: dict[str, Any] = {"phase": phase, "reason": reason}
    if output is not None:
        data["output"] = output
    if error is not None:
        data["error"] = error
    return Commit("WorkflowFinished", data=data)


def _finish_succeeded(state: RunState) -> Commit:
    try:
        output = expressions.render(_spec(state).output, evaluation_context(state), "output")
    except expressions.ExpressionError as e:
        return _run_failing("Failed", None, "ExpressionError", str(e))
    return _finish("Succeeded", "Succeeded", output=output)
