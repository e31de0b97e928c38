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
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from kurable.api.v1alpha1 import HORIZON_SECONDS, Step, WorkflowSpec, duration_seconds
from kurable.api.v1alpha1.workflow import TIMESTAMP_PATTERN, UNTIL_MESSAGE, Retry

from . import expressions
from . import records as r
from .journal import RunState, StepState, now_rfc3339, parse_time
from .records import FORMAT_VERSION, RecordData, RecordType, typed_payload
from .tracecontext import parse_traceparent

_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)

MAX_TRANSITIONS = 10_000
"""Step transitions a run may make; a `next` loop that never ends fails clearly."""

COMPENSATE_SUFFIX = ":compensate"
"""Compensation steps are journaled as `<step>:compensate` (no user name has a colon)."""

HORIZON = timedelta(seconds=HORIZON_SECONDS)
"""The longest delay, timeout or sleep the engine schedules (about 1000 years): a longer
one means never, and `now + HORIZON` stays inside what a datetime can hold. Every duration
of a spec is read at most this long (`duration_seconds`), wherever it is read."""

# Error kinds retried when `retryOn` does not say otherwise.
RETRYABLE = frozenset({"Timeout", "ConnectionError", "HttpServerError", "Unavailable"})


@dataclass(frozen=True)
class Commit:
    """Append this record (its payload typed as engine/records.py's model of `type`;
    a plain dict is read into that model)."""

    type: RecordType
    step: str | None = None
    attempt: int | None = None
    data: RecordData = None  # type: ignore[assignment]  # None: the type's empty payload

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", typed_payload(self.type, self.data))


@dataclass(frozen=True)
class Act:
    """Perform the attempt in flight of `step`, then commit `outcome(...)`."""

    step: Step
    attempt: int
    deadline: datetime | None
    scope: Scope
    """The sequence the step belongs to (where the run goes after it)."""
    compensating: str | None = None
    """The step being compensated, when this is a compensation."""
    visit: int = 1
    """Which visit of the step this is (a `next` loop visits a step again)."""

    def idempotency_key(self, uid: str) -> str:
        """Stable across the attempts and re-executions of one visit of one step."""
        key = f"{uid}/{self.step.name}"
        return key if self.visit <= 1 else f"{key}#{self.visit}"


@dataclass(frozen=True)
class Wait:
    """Nothing to do before `until` (None: until something outside changes).

    `until` is the earliest of the wait's own time (a timer, a retry) and every deadline
    that could end it: the run's (`spec.timeout`, while the run is not already failing)
    and the step's (its attempt deadline, from `timeout` or `wait.timeout`). The executor
    sleeps until then at most, and asks again: a deadline never waits for an unrelated
    change to be noticed.
    """

    until: datetime | None
    reason: str


SUSPENDED = "Suspended"
"""The reason of a Wait while `spec.suspend` is true, alone or before the reason of the
step in flight: `Suspended (sleeping until …)`."""


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
        return self.to_record().to_wire()

    def to_record(self) -> r.StepErrorInfo:
        """As journaled in StepFailed: {kind, message}."""
        return r.StepErrorInfo(kind=self.kind, message=self.message)


def start_record(
    definition: WorkflowSpec,
    input: Any,
    workflow: dict[str, str],
    now: datetime,
    template: dict[str, Any] | None = None,
    traceparent: str | None = None,
) -> Commit:
    """The first record of a run: pins the resolved definition it will run to the end,
    and the `traceparent` it was started with (a malformed one is dropped)."""
    steps = definition.steps or []
    parent = parse_traceparent(traceparent)
    data: dict[str, Any] = {
        "formatVersion": FORMAT_VERSION,
        "definition": definition.to_wire(),
        "input": input,
        "workflow": workflow,
        "first": steps[0].name if steps else None,
    }
    if definition.timeout:
        data["deadline"] = now_rfc3339(_later(now, definition.timeout))
    if template is not None:
        data["template"] = template
    if parent is not None:
        data["traceparent"] = parent.header()
    return Commit("WorkflowStarted", data=r.WorkflowStarted.model_validate(data))


def waiting_to_start(
    timeout: str | None, created: datetime, now: datetime, reason: str, cancel: bool = False
) -> Commit | Wait:
    """A run that cannot start yet (its WorkflowTemplate does not exist): wait, waking
    up at its deadline, or fail it with reason `Timeout` once the deadline has passed.
    A run cancelled (`cancel`: its `spec.cancel`) before it started ends `Cancelled` at
    once (reason `Cancelled`): it has nothing to compensate.

    Before the first record there is no pinned deadline: the run's `timeout` (the inline
    `spec.timeout`; a template's own timeout is not known yet) counts from `created`, the
    object's creationTimestamp, so that a run waiting for a template that never comes
    ends. Returns a `WorkflowFinished` commit (phase Failed, reason Timeout) or a Wait.
    """
    if cancel:
        message = f"spec.cancel is true; the run had not started: {reason}"
        return _finish("Cancelled", "Cancelled", error={"reason": "Cancelled", "message": message})
    try:
        deadline = _later(created, timeout) if timeout is not None else None
    except ValueError:
        deadline = None  # not a duration: the API server refuses it; validation says so
    if deadline is None:
        return Wait(None, reason)
    if now < deadline:
        return Wait(deadline, reason)
    message = f"the workflow timed out ({timeout}) before it could start: {reason}"
    error = {"step": None, "reason": "Timeout", "message": message}
    return _finish("Failed", "Timeout", error=error)


def next_decision(
    state: RunState, now: datetime, flags: Flags = Flags(), busy: frozenset[str] = frozenset()
) -> Decision:
    """The next thing to do for a run in `state`.

    `busy` names the steps whose action the executor is performing right now (their
    outcome is not journaled yet); the engine looks for other work meanwhile, which is
    how the branches of a `parallel` step act at the same time.

    The run's deadline (`spec.timeout`, counted from the start) keeps running while the
    run is suspended, as Argo's `activeDeadlineSeconds` and Temporal's workflow execution
    timeout keep running while a workflow is paused: a suspended run past its deadline
    fails with reason `Timeout`, and its compensations run (they are not paused by
    `suspend`, which pauses only forward progress).

    An exception inside the engine is a bug in Kurable or a definition it let through,
    not an outage: instead of raising (the executor would retry forever), the run fails
    with reason `InternalError` and the exception's message.
    """
    if state.finished:
        return Done()
    assert state.spec is not None, "a run's journal starts with WorkflowStarted"
    try:
        return _next(state, now, flags, busy)
    except Exception as e:  # a bug must end the run, not loop it
        ending = internal_error(state, e, "deciding")
        assert ending is not None  # the run is not finished
        return ending


def internal_error(state: RunState, error: BaseException, doing: str) -> Commit | None:
    """The record that ends a run after `error` was raised inside the engine while
    `doing` (e.g. "deciding", "projecting status"): a bug in Kurable or a definition it let
    through, not an outage, so the run must end rather than be retried forever.

    Before the first record: `WorkflowFinished` (phase Failed, reason InternalError).
    While running: `RunFailing` (reason InternalError), so compensations run. While
    compensating: `WorkflowFinished` with the failure's phase (compensating again would
    fail again). A finished run: None (nothing left to journal). The message is
    `internal error while <doing>: <type>: <text>`."""
    message = f"internal error while {doing}: {type(error).__name__}: {error}"
    if state.finished:
        return None
    if state.spec is None:
        return _finish(
            "Failed", "InternalError", error={"reason": "InternalError", "message": message}
        )
    if state.failing is None:
        return _run_failing("Failed", state.position, "InternalError", message)
    cause = state.failing.get("error")
    ended = {"reason": "InternalError", "message": message, "cause": cause}
    return _finish(state.failing["phase"], "InternalError", error=ended)


def _next(state: RunState, now: datetime, flags: Flags, busy: frozenset[str]) -> Decision:
    assert state.spec is not None
    if state.failing is None:
        if flags.cancel:
            return _run_failing("Cancelled", None, "Cancelled", "spec.cancel is true")
        if state.deadline is not None and now >= parse_time(state.deadline):
            return _run_failing(
                "Failed", None, "Timeout", f"the workflow timed out ({state.spec.timeout})"
            )
        decision = _forward(state, now, flags, busy)
        if (
            flags.suspend
            and isinstance(decision, Wait)
            and not decision.reason.startswith(SUSPENDED)
        ):
            # A step in flight (a sleep, a wait, an attempt) ends as it would; the run
            # shows Suspended at once, and starts nothing after it.
            return Wait(decision.until, f"{SUSPENDED} ({decision.reason})")
        return decision
    return _compensate(state, now, busy)


def outcome(
    state: RunState, act: Act, now: datetime, output: Any = None, error: StepError | None = None
) -> Commit:
    """The record that ends the attempt `act` with `output` or `error`."""
    if error is None:
        return _complete(state, act.scope, act.step, act.attempt, output, act.compensating)
    return _failed(state, act.scope, act.step, act.attempt, error, now, act.compensating)


def evaluation_context(state: RunState, scope: Scope | None = None) -> dict[str, Any]:
    """What expressions see: input, steps.<name>.output (and .phase, .error: {kind,
    message} of its last failed attempt), vars, workflow; inside a
    branch also its own steps by their short names; inside a forEach, item and index."""
    steps = {
        name: {"output": s.output, "phase": s.phase, "error": s.error}
        for name, s in state.steps.items()
    }
    context: dict[str, Any] = {
        "input": state.input,
        "vars": state.vars,
        "steps": steps,
        "workflow": state.workflow,
    }
    if scope is not None and scope.thread is not None:
        prefix = scope.thread + "."
        for name, value in list(steps.items()):
            if name.startswith(prefix):
                steps[name[len(prefix) :]] = value
        if scope.thread.endswith("]"):
            parent, _, index = scope.thread[:-1].rpartition("[")
            items = state.step(parent).items or []
            context["index"] = int(index)
            context["item"] = items[int(index)] if int(index) < len(items) else None
    return context


def backoff_delay(retry: Retry, attempt: int, key: str) -> timedelta:
    """Delay before attempt `attempt + 1` (attempt >= 1), in [d * (1 - jitter), d] where
    d = min(max, initial * factor^(attempt - 1)): `max` is the longest delay, jitter only
    shortens it.

    This is the capped exponential backoff of the AWS Architecture Blog's "Exponential
    Backoff and Jitter" (Marc Brooker, 2015) with the jitter as a fraction: `jitter: 1`
    is its "full jitter" (uniform in [0, d]), `jitter: 0.5` its "equal jitter" (d/2 plus
    uniform in [0, d/2]), `jitter: 0` no jitter. The cap is applied before
    exponentiating (in logarithms), so no attempt number overflows, and the delay is at
    most `HORIZON`. The jitter comes from a hash of `key` and the attempt, not from a
    random source, so that replaying a journal decides exactly the same retry time.
    Defaults without `backoff`: initial 1s, factor 2, max 5m, jitter 0.1.
    """
    backoff = retry.backoff
    if backoff is None:
        initial, factor, cap, jitter = 1.0, 2.0, 300.0, 0.1
    else:
        initial = duration_seconds(backoff.initial)
        factor, jitter = backoff.factor, min(1.0, max(0.0, backoff.jitter))
        cap = duration_seconds(backoff.max)
    cap = min(cap, HORIZON.total_seconds())
    exponent = max(0, attempt - 1)
    if initial <= 0.0 or cap <= 0.0:
        base = 0.0
    elif initial >= cap or exponent * math.log(factor) >= math.log(cap / initial):
        base = cap
    else:
        base = min(cap, initial * factor**exponent)  # < cap, so it did not overflow
    digest = hashlib.sha256(f"{key}/{attempt}".encode()).digest()
    unit = int.from_bytes(digest[:8], "big") / 2**64  # in [0, 1)
    seconds = min(base, max(0.0, base * (1.0 - jitter * unit)))
    # To a timedelta's whole microseconds: the nearest one, but never above the cap's own
    # (the epsilon absorbs a float product such as 8.011 * 1e6 = 8010999.999999999).
    cap_micros = math.floor(cap * 1_000_000 + 1e-6)
    micros = min(round(seconds * 1_000_000), cap_micros)
    # Past 2**53 microseconds (about 285 years) a float cannot hold every microsecond:
    # step down until the delay, read back as seconds, is not above the cap (a few steps).
    while micros > 0 and micros / 1_000_000 > cap:
        micros -= 1
    return timedelta(microseconds=micros)


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
    return step.compensate.model_copy(update={"name": step.name + COMPENSATE_SUFFIX})


# -- scopes: the run's steps, a parallel branch's steps, one forEach item -----------------


@dataclass(frozen=True)
class Scope:
    """A sequence of steps with its own position: the run's (thread None), a branch's
    (`P.branch`) or one forEach item's (`F[3]`). Names inside are qualified, so that a
    step is journaled under a name unique in the run."""

    thread: str | None
    steps: tuple[Step, ...]

    def following(self, step: Step) -> str | None:
        """Where the scope goes after `step` completes: its `next`, else the step below."""
        return step.next if step.next is not None else self.sequential(step)

    def sequential(self, step: Step) -> str | None:
        names = [s.name for s in self.steps]
        index = names.index(step.name) if step.name in names else len(names)
        return names[index + 1] if index + 1 < len(names) else None

    def outcome_data(self, next_step: str | None) -> dict[str, Any]:
        data: dict[str, Any] = {"next": next_step}
        if self.thread is not None:
            data["thread"] = self.thread
        return data


def main_scope(spec: WorkflowSpec) -> Scope:
    return Scope(None, tuple(spec.steps or ()))


def child_scopes(parent: Step, items: list[Any] | None = None) -> list[Scope]:
    """The branches of a `parallel` step, or one scope per item of a `forEach` step."""
    if parent.parallel is not None:
        scopes = []
        for branch in parent.parallel.branches:
            thread = f"{parent.name}.{branch.name}"
            steps = tuple(_qualified(step, thread) for step in branch.steps)
            scopes.append(Scope(thread, steps))
        return scopes
    assert parent.for_each is not None and items is not None
    body = parent.model_copy(update={"for_each": None, "next": None, "on_failure": None})
    return [
        Scope(f"{parent.name}[{i}]", (body.model_copy(update={"name": f"{parent.name}[{i}]"}),))
        for i in range(len(items))
    ]


def _qualified(step: Step, thread: str) -> Step:
    update: dict[str, Any] = {"name": f"{thread}.{step.name}"}
    if step.next is not None:
        update["next"] = f"{thread}.{step.next}"
    if step.on_failure is not None:
        update["on_failure"] = step.on_failure.model_copy(
            update={"goto": f"{thread}.{step.on_failure.goto}"}
        )
    return step.model_copy(update=update)


def resolve(state: RunState, name: str) -> Step | None:
    """The step journaled as `name`, wherever it sits (the run, a branch, an item)."""
    found = locate(state, name)
    return found[0] if found is not None else None


def locate(state: RunState, name: str) -> tuple[Step, list[str]] | None:
    """The step journaled as `name` with the names of the fan-out steps (parallel,
    forEach) around it, outermost first; None when no step has that name."""
    return _find(state, main_scope(_spec(state)).steps, name, [])


def _find(
    state: RunState, steps: Sequence[Step], name: str, around: list[str]
) -> tuple[Step, list[str]] | None:
    for step in steps:
        if step.name == name:
            return step, around
        if step.parallel is not None and name.startswith(step.name + "."):
            scopes = child_scopes(step)
        elif step.for_each is not None and name.startswith(step.name + "["):
            scopes = child_scopes(step, state.step(step.name).items or [])
        else:
            continue
        for scope in scopes:
            found = _find(state, scope.steps, name, [*around, step.name])
            if found is not None:
                return found
    return None


# -- moving forward ---------------------------------------------------------------------


def _forward(state: RunState, now: datetime, flags: Flags, busy: frozenset[str]) -> Decision:
    if state.position is None:
        if flags.suspend:
            # Finishing is the step after the last: a suspended run does not finish
            # (nor compute its output) until it is resumed, or its deadline fails it.
            return _wait(state, None, SUSPENDED)
        return _finish_succeeded(state)
    if state.transitions >= MAX_TRANSITIONS:
        return _run_failing(
            "Failed",
            state.position,
            "TransitionLimit",
            f"{state.transitions} step transitions: an endless `next` loop? "
            f"(the limit is {MAX_TRANSITIONS})",
        )
    scope = main_scope(_spec(state))
    step = next((s for s in scope.steps if s.name == state.position), None)
    if step is None:
        return _run_failing(
            "Failed", state.position, "UnknownStep", f"no step named {state.position!r}"
        )
    current = state.step(step.name)
    if current.phase == "Failed" and current.error is not None and current.finished_at:
        # Failed for good, and no onFailure moved the run elsewhere.
        message = current.error.get("message", "step failed")
        return _run_failing("Failed", step.name, "StepFailed", message)
    return _advance(state, scope, step, now, flags, busy)


def _advance(
    state: RunState, scope: Scope, step: Step, now: datetime, flags: Flags, busy: frozenset[str]
) -> Decision:
    """The next thing to do for `step`, the current step of `scope`."""
    current = state.step(step.name)
    if step.name in busy:
        return _performing(state, current, now)
    if step.parallel is not None or step.for_each is not None:
        if current.in_flight:
            return _fan(state, scope, step, current, now, flags, busy)
    elif current.in_flight or current.phase == "Retrying":
        return _continue(state, scope, step, current, now)

    # A new visit of the step.
    if flags.suspend:
        # Suspended still wakes up for the run's deadline (see next_decision).
        return _wait(state, None, SUSPENDED)
    context = evaluation_context(state, scope)
    if step.when is not None:
        try:
            run_it = expressions.condition(step.when, context)
        except expressions.ExpressionError as e:
            error = StepError("ExpressionError", str(e.at(f"{step.name}.when")))
            return _failed(state, scope, step, 1, error, now)
        if not run_it:
            # A skipped step has no effects, its `next` jump included.
            skipped = r.StepSkipped(**scope.outcome_data(scope.sequential(step)))
            return Commit("StepSkipped", step.name, data=skipped)
    if step.for_each is not None:
        try:
            items = expressions.render(step.for_each.items, context, f"{step.name}.forEach")
        except expressions.ExpressionError as e:
            return _failed(state, scope, step, 1, StepError("ExpressionError", str(e)), now)
        if not isinstance(items, list):
            error = StepError(
                "ExpressionError", f"{step.name}.forEach.items must be a list, got {items!r}"
            )
            return _failed(state, scope, step, 1, error, now)
        # The items are pinned in the journal: a replay iterates exactly the same list.
        return Commit("StepStarted", step.name, 1, r.StepStarted(items=items, **_thread(scope)))
    if step.parallel is not None:
        return Commit("StepStarted", step.name, 1, r.StepStarted(**_thread(scope)))
    return _begin(state, scope, step, 1, now, None)


def _fan(
    state: RunState,
    scope: Scope,
    step: Step,
    current: StepState,
    now: datetime,
    flags: Flags,
    busy: frozenset[str],
) -> Decision:
    """Drive the branches (or items) of a fan-out step; join when all have finished."""
    children = child_scopes(step, current.items)
    limit = step.for_each.concurrency if step.for_each is not None else len(children)
    waits: list[Wait] = []
    failures: list[tuple[str, dict[str, Any]]] = []
    active = 0
    pending: list[Scope] = []
    for child in children:
        position = state.positions.get(child.thread or "", child.steps[0].name)
        if position is None:
            continue  # finished
        child_step = next(s for s in child.steps if s.name == position)
        child_state = state.step(child_step.name)
        if child_state.phase == "Failed" and child_state.finished_at and child_state.error:
            failures.append((child_step.name, child_state.error))
            continue
        started = child_state.visits > 0 or child_state.in_flight or child.thread in state.positions
        if not started:
            pending.append(child)
            continue
        active += 1
        decision = _advance(state, child, child_step, now, flags, busy)
        if isinstance(decision, Wait):
            waits.append(decision)
        else:
            return decision
    fail_fast = step.parallel.fail_fast if step.parallel is not None else True
    if failures and (fail_fast or active == 0):
        name, error = failures[0]
        message = f"{name}: {error.get('message', 'failed')}"
        return _failed(
            state,
            scope,
            step,
            current.attempts,
            StepError(error.get("kind", "StepFailed"), message, retryable=False),
            now,
        )
    if not failures:
        for child in pending[: max(0, limit - active)]:
            decision = _advance(state, child, child.steps[0], now, flags, busy)
            if isinstance(decision, Wait):
                waits.append(decision)
            else:
                return decision
    if active == 0 and not pending and not failures:
        return _complete(state, scope, step, current.attempts, _joined(state, step, children))
    untils = [w.until for w in waits if w.until is not None]
    return _wait(state, min(untils) if untils else None, f"waiting for the branches of {step.name}")


def _begin(
    state: RunState,
    scope: Scope,
    step: Step,
    attempt: int,
    now: datetime,
    compensating: str | None,
) -> Decision:
    """Start attempt `attempt` of `step`: evaluate it now, or journal its start."""
    context = evaluation_context(state, scope)
    if step.set is not None:
        try:
            values = expressions.render(step.set, context, f"{step.name}.set")
        except expressions.ExpressionError as e:
            error = StepError("ExpressionError", str(e))
            return _failed(state, scope, step, attempt, error, now, compensating)
        commit = _complete(state, scope, step, attempt, values, compensating)
        if compensating is None:
            commit = replace(commit, data=commit.data.model_copy(update={"vars": values}))
        return commit

    data: dict[str, Any] = _thread(scope)
    if step.sleep is not None:
        try:
            wake_at = _wake_time(step, context, now)
        except (ValueError, OverflowError, expressions.ExpressionError) as e:
            error = StepError("InvalidTimer", f"{step.name}.sleep: {e}")
            return _failed(state, scope, step, attempt, error, now, compensating)
        # Only the step's own timeout: the run's deadline is checked for the whole run
        # (and a sleep journaled without a timeout reads as before).
        if step.timeout:
            data["deadline"] = now_rfc3339(_later(now, step.timeout))
        return Commit("StepStarted", step.name, attempt, r.StepStarted(wake_at=wake_at, **data))
    deadline = _attempt_deadline(state, step, now)
    if deadline is not None:
        data["deadline"] = now_rfc3339(deadline)
    if step.wait is not None:
        data["signal"] = step.wait.signal
    return Commit("StepStarted", step.name, attempt, r.StepStarted(**data))


def _continue(
    state: RunState,
    scope: Scope,
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
        return _begin(state, scope, step, current.attempts + 1, now, compensating)

    deadline = parse_time(current.deadline) if current.deadline else None
    if step.sleep is not None:
        assert current.wake_at is not None
        due = parse_time(current.wake_at)
        if now < due:
            if deadline is not None and now >= deadline:
                error = StepError("Timeout", _timed_out(step, current.attempts))
                return _failed(state, scope, step, current.attempts, error, now, compensating)
            return _wait(state, due, f"sleeping until {current.wake_at}", deadline)
        woke = {"wokeAt": now_rfc3339(now)}
        return _complete(state, scope, step, current.attempts, woke, compensating)

    if step.wait is not None:
        signal = state.pending_signal(step.wait.signal)
        if signal is not None:
            commit = _complete(state, scope, step, current.attempts, signal.payload, compensating)
            took = commit.data.model_copy(update={"consumed": signal.seq})
            return replace(commit, data=took)
        if deadline is not None and now >= deadline:
            error = StepError("Timeout", _timed_out(step, current.attempts))
            return _failed(state, scope, step, current.attempts, error, now, compensating)
        return _wait(state, deadline, f"waiting for signal {step.wait.signal}")

    if deadline is not None and now >= deadline:
        error = StepError("Timeout", _timed_out(step, current.attempts))
        return _failed(state, scope, step, current.attempts, error, now, compensating)
    return Act(step, current.attempts, deadline, scope, compensating, max(1, current.visits))


def _complete(
    state: RunState,
    scope: Scope,
    step: Step,
    attempt: int,
    output: Any,
    compensating: str | None = None,
) -> Commit:
    if compensating is None:
        data = {"output": output, **scope.outcome_data(scope.following(step))}
    else:
        data = {"output": output, "of": compensating}
    return Commit("StepCompleted", step.name, attempt, r.StepCompleted(**data))


def _failed(
    state: RunState,
    scope: Scope,
    step: Step,
    attempt: int,
    error: StepError,
    now: datetime,
    compensating: str | None = None,
) -> Commit:
    """An attempt failed: retry later, go to onFailure, or fail the step for good."""
    retry = retry_policy(state, step)
    data: dict[str, Any] = {"error": error.to_record(), **_thread(scope)}
    if attempt < retry.max_attempts and is_retryable(retry, error):
        key = f"{state.workflow.get('uid', '')}/{step.name}"
        data["retry_at"] = now_rfc3339(now + backoff_delay(retry, attempt, key))
        return Commit("StepFailed", step.name, attempt, r.StepFailed(**data))
    if compensating is None:
        # Stay on the failed step (the scope then fails) unless onFailure routes elsewhere.
        goto = step.on_failure.goto if step.on_failure else step.name
        data.update(scope.outcome_data(goto))
    else:
        data["of"] = compensating
    return Commit("StepFailed", step.name, attempt, r.StepFailed(**data))


def _joined(state: RunState, step: Step, children: list[Scope]) -> Any:
    """A parallel step's output: {branch: its last step's output}; a forEach's: a list."""
    outputs = [state.step(child.steps[-1].name).output for child in children]
    if step.parallel is not None:
        return {b.name: out for b, out in zip(step.parallel.branches, outputs, strict=True)}
    return outputs


def _thread(scope: Scope) -> dict[str, Any]:
    return {"thread": scope.thread} if scope.thread is not None else {}


# -- compensating -----------------------------------------------------------------------


def _compensate(state: RunState, now: datetime, busy: frozenset[str]) -> Decision:
    """Undo completed steps in reverse order of completion; then finish."""
    assert state.failing is not None
    ran_any = False
    for name in compensation_order(state):
        ran_any = True
        if name in state.compensated:
            continue
        step = resolve(state, name)
        assert step is not None
        undo = compensation_step(step)
        scope = Scope(None, (undo,))
        current = state.step(undo.name)
        if undo.name in busy:
            return _performing(state, current, now)
        if current.in_flight or current.phase == "Retrying":
            return _continue(state, scope, undo, current, now, compensating=name)
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
        return _begin(state, scope, undo, 1, now, name)
    error = state.failing["error"]
    if ran_any:
        compensated = {**error, "reason": "Compensated", "cause": error.get("reason")}
        return _finish(state.failing["phase"], "Compensated", error=compensated)
    return _finish(state.failing["phase"], error.get("reason", "Failed"), error=error)


def failing_message(state: RunState) -> str:
    """What a run that began failing (after its RunFailing record) does next, for people:
    `<reason>: <message>; compensating b, a` or `...; nothing to compensate`."""
    assert state.failing is not None
    error = state.failing["error"]
    undo = compensation_order(state)
    then = f"compensating {', '.join(undo)}" if undo else "nothing to compensate"
    return f"{error.get('reason')}: {error.get('message')}; {then}"


def compensation_order(state: RunState) -> list[str]:
    """Completed steps that declare `compensate`, last completed first, each once."""
    order: list[str] = []
    for name in reversed(state.completed):
        if name in order:
            continue
        step = resolve(state, name)
        if step is not None and step.compensate is not None:
            order.append(name)
    return order


def _spec(state: RunState) -> WorkflowSpec:
    assert state.spec is not None
    return state.spec


def _step_timeout(step: Step) -> tuple[str, str] | None:
    """The timeout that bounds an attempt of `step`, as (its field, its duration): the
    step's `timeout`, else a wait's `wait.timeout`."""
    if step.timeout:
        return "timeout", step.timeout
    if step.wait is not None and step.wait.timeout:
        return "wait.timeout", step.wait.timeout
    return None


def _timed_out(step: Step, attempt: int) -> str:
    """Why attempt `attempt` of `step` ended at its deadline; a wait names the timeout
    that fired (the run's own deadline is reported by the run, not by its step)."""
    timeout = _step_timeout(step)
    if step.wait is not None and timeout is not None:
        return f"no signal {step.wait.signal!r} within {timeout[1]}"
    return f"attempt {attempt} timed out"


def _attempt_deadline(state: RunState, step: Step, now: datetime) -> datetime | None:
    """The earlier of the step's timeout (or a wait's) and the run's deadline."""
    candidates = []
    timeout = _step_timeout(step)
    if timeout:
        candidates.append(_later(now, timeout[1]))
    if state.deadline and state.failing is None:
        candidates.append(parse_time(state.deadline))
    return min(candidates) if candidates else None


def _wait(
    state: RunState, until: datetime | None, reason: str, step_deadline: datetime | None = None
) -> Wait:
    """Wait until `until`, but wake up for the step's deadline and the run's (unless the
    run is failing already: compensations are not bound by the run's deadline)."""
    times = [t for t in (until, step_deadline) if t is not None]
    if state.deadline is not None and state.failing is None:
        times.append(parse_time(state.deadline))
    return Wait(min(times) if times else None, reason)


def _performing(state: RunState, current: StepState, now: datetime) -> Wait:
    """The executor is performing `current`'s attempt: wait for it to return. It enforces
    the attempt's deadline itself (`Act.deadline`); once that has passed, only its return
    can change anything, so the wait no longer wakes up for it."""
    deadline = parse_time(current.deadline) if current.deadline else None
    future = deadline if deadline is not None and deadline > now else None
    return _wait(state, None, f"performing {current.name}", future)


def _later(now: datetime, duration: str) -> datetime:
    """`now` plus a duration of the spec, at most `HORIZON` later (a longer one never
    arrives anyway, and would overflow a datetime)."""
    seconds = min(duration_seconds(duration), HORIZON.total_seconds())
    return now + timedelta(seconds=seconds)


def _wake_time(step: Step, context: dict[str, Any], now: datetime) -> str:
    assert step.sleep is not None
    if step.sleep.duration is not None:
        return now_rfc3339(_later(now, step.sleep.duration))
    until = expressions.render(step.sleep.until, context)
    # The rule a literal `until` meets at apply time (the CRD's), held to the evaluated one.
    if not isinstance(until, str) or _TIMESTAMP.fullmatch(until) is None:
        raise ValueError(f"until evaluated to {until!r}: {UNTIL_MESSAGE}")
    try:
        moment = parse_time(until.upper())  # the rule allows t and z; Python reads T and Z
    except ValueError:
        raise ValueError(f"until evaluated to {until!r}, a time that does not exist") from None
    return now_rfc3339(moment)


def _run_failing(phase: str, step: str | None, reason: str, message: str) -> Commit:
    error = r.RunError(step=step, reason=reason, message=message)
    return Commit("RunFailing", data=r.RunFailing(phase=phase, error=error))


def _finish(
    phase: str, reason: str, output: Any = None, error: dict[str, Any] | None = None
) -> Commit:
    data: dict[str, Any] = {"phase": phase, "reason": reason}
    if output is not None:
        data["output"] = output
    if error is not None:
        data["error"] = r.RunError.model_validate(error)
    return Commit("WorkflowFinished", data=r.WorkflowFinished(**data))


def _finish_succeeded(state: RunState) -> Commit:
    try:
        output = expressions.render(_spec(state).output, evaluation_context(state), "output")
    except expressions.ExpressionError as e:
        return _run_failing("Failed", None, "ExpressionError", str(e))
    return _finish("Succeeded", "Succeeded", output=output)
