"""The journal of a workflow run, and the replay that turns it into the run's state.

A journal is an append-only list of records, one per decision that was committed:

- `WorkflowStarted`: the pinned definition, input, and where it came from;
- `SignalReceived`: a signal, journaled when it arrives (before or during its wait);
- `StepStarted`: an attempt began (with its deadline, or a timer's wake-up time);
- `StepCompleted` / `StepFailed` / `StepSkipped`: an outcome, and where the run goes;
- `RunFailing`: the run failed, timed out or was cancelled: compensation begins;
- `WorkflowFinished`: the end.

The state of a run is a pure fold of its journal; nothing else is remembered. Each
record's payload is typed (engine/records.py: the durable, versioned format).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from kurable.api.v1alpha1 import WorkflowSpec

from . import records as r
from .records import RecordData, RecordType, read_payload, typed_payload

TERMINAL_PHASES = ("Succeeded", "Failed", "Cancelled", "Invalid")
IN_FLIGHT = ("Running", "Waiting")


@dataclass(frozen=True)
class Record:
    """One committed journal entry: an envelope and the typed payload of its type.

    Stored in etcd as {seq, type, at, step?, attempt?, data?, executor?}; `data` is the
    payload's wire form (engine/records.py). A plain dict given as `data` is read into
    the payload model of `type`.
    """

    seq: int
    """Position in the journal, from 0; also the etcd key suffix."""
    type: RecordType
    at: str
    """When it was committed (RFC 3339, UTC)."""
    step: str | None = None
    attempt: int | None = None
    data: RecordData = None  # type: ignore[assignment]  # None: the type's empty payload
    executor: str | None = None
    """Which operator instance committed it (for audits and crash tests)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", typed_payload(self.type, self.data))

    def to_json(self) -> dict[str, Any]:
        """The record as stored in etcd."""
        out: dict[str, Any] = {"seq": self.seq, "type": self.type, "at": self.at}
        if self.step is not None:
            out["step"] = self.step
        if self.attempt is not None:
            out["attempt"] = self.attempt
        data = self.data.to_wire()
        if data:
            out["data"] = data
        if self.executor is not None:
            out["executor"] = self.executor
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Record:
        """A record as stored in etcd, in any format version this operator reads.

        Raises UnsupportedFormat (a newer operator's journal) or pydantic's
        ValidationError (a record that is not a journal record)."""
        return cls(
            seq=int(raw["seq"]),
            type=raw["type"],
            at=raw["at"],
            step=raw.get("step"),
            attempt=raw.get("attempt"),
            data=read_payload(raw["type"], raw.get("data") or {}),
            executor=raw.get("executor"),
        )


@dataclass(frozen=True)
class StepState:
    """What the journal says about one step (its latest visit)."""

    name: str
    phase: str = "Pending"
    """Pending, Running, Waiting, Retrying, Succeeded, Failed or Skipped."""
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    wake_at: str | None = None
    """A timer's wake-up time, or when the next attempt of a retried step is due."""
    deadline: str | None = None
    """When the attempt in flight times out."""
    output: Any = None
    error: dict[str, Any] | None = None
    visits: int = 0
    items: list[Any] | None = None
    """A forEach step's items, pinned when it started."""

    @property
    def in_flight(self) -> bool:
        return self.phase in IN_FLIGHT


@dataclass(frozen=True)
class Signal:
    """A journaled signal."""

    seq: int
    name: str
    payload: Any
    source: str | None = None
    """The send's route (records.SignalReceived.source); None: an annotation."""
    key: str | None = None
    """The SHA-256 of the endpoint's Idempotency-Key it was sent with (format 2)."""


@dataclass(frozen=True)
class RunState:
    """The state of a run, replayed from its journal."""

    spec: WorkflowSpec | None = None
    """The pinned definition (steps, output, retry, timeout) from WorkflowStarted."""
    format_version: int = 1
    """The journal's format (records.py), from WorkflowStarted: records appended to it are
    written in that format."""
    input: Any = None
    workflow: dict[str, Any] = field(default_factory=dict)
    """name, namespace and uid of the run, as expressions see them."""
    template: dict[str, Any] | None = None
    """The WorkflowTemplate (name, generation) the definition was pinned from."""
    started_at: str | None = None
    deadline: str | None = None
    """When the whole run times out."""
    traceparent: str | None = None
    """The `traceparent` the run was started with (its trace continues that one)."""
    position: str | None = None
    """The step to run next (None once past the last step)."""
    positions: dict[str, str | None] = field(default_factory=dict)
    """The same for each started branch (`P.branch`) or forEach item (`F[3]`)."""
    steps: dict[str, StepState] = field(default_factory=dict)
    completed: tuple[str, ...] = ()
    """Steps in the order they completed (the order compensation reverses)."""
    vars: dict[str, Any] = field(default_factory=dict)
    transitions: int = 0
    signals: tuple[Signal, ...] = ()
    consumed: frozenset[int] = frozenset()
    """Sequence numbers of the signals a `wait` step has taken."""
    failing: dict[str, Any] | None = None
    """Set by RunFailing: {phase, error}; compensation is under way."""
    compensated: tuple[str, ...] = ()
    """Steps whose compensation completed."""
    phase: str | None = None
    """Terminal phase once WorkflowFinished is journaled."""
    reason: str | None = None
    finished_at: str | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    records: int = 0

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def step(self, name: str) -> StepState:
        return self.steps.get(name) or StepState(name=name)

    def pending_signal(self, name: str) -> Signal | None:
        """The oldest journaled signal `name` that no wait step has taken yet."""
        for signal in self.signals:
            if signal.name == name and signal.seq not in self.consumed:
                return signal
        return None


def fold(records: list[Record]) -> RunState:
    """Replay a journal into the run's state."""
    state = RunState()
    for record in records:
        state = apply(state, record)
    return state


def apply(state: RunState, record: Record) -> RunState:
    """The state after one more record."""
    state = replace(state, records=state.records + 1)
    data = record.data
    if isinstance(data, r.WorkflowStarted):
        return replace(
            state,
            spec=WorkflowSpec.model_validate(data.definition),
            format_version=data.format_version,
            input=data.input,
            workflow=dict(data.workflow),
            template=data.template,
            started_at=record.at,
            deadline=data.deadline,
            position=data.first,
            traceparent=data.traceparent,
        )
    if isinstance(data, r.SignalReceived):
        signal = Signal(record.seq, data.name, data.payload, data.source, data.idempotency_key)
        return replace(state, signals=(*state.signals, signal))
    if isinstance(data, r.RunFailing):
        return replace(state, failing={"phase": data.phase, "error": data.error.to_wire()})
    if isinstance(data, r.WorkflowFinished):
        return replace(
            state,
            phase=data.phase,
            reason=data.reason,
            finished_at=record.at,
            output=data.output,
            error=data.error.to_wire() if data.error is not None else None,
        )
    assert record.step is not None, f"record {record.seq} ({record.type}) names no step"
    step = state.step(record.step)
    thread = data.thread
    if isinstance(data, r.StepStarted):
        new_visit = step.phase not in (*IN_FLIGHT, "Retrying")
        positions = state.positions
        if new_visit and positions:
            # A fan-out step starting again (in a loop) starts its branches afresh.
            positions = {
                k: v
                for k, v in positions.items()
                if not k.startswith((step.name + ".", step.name + "["))
            }
        if thread is not None:
            positions = {**positions, thread: step.name}
        state = replace(state, positions=positions)
        items = data.items
        if items is None and not new_visit:
            items = step.items
        step = replace(
            step,
            phase="Waiting" if data.wake_at or data.signal else "Running",
            attempts=record.attempt or 1,
            started_at=record.at if new_visit else step.started_at,
            finished_at=None,
            wake_at=data.wake_at,
            deadline=data.deadline,
            output=None if new_visit else step.output,
            error=None if new_visit else step.error,
            visits=step.visits + (1 if new_visit else 0),
            items=items,
        )
        return _with_step(state, step)

    if isinstance(data, r.StepFailed) and data.retry_at:
        # One attempt failed; another is due at retryAt. The run stays on this step.
        step = replace(
            step,
            phase="Retrying",
            attempts=record.attempt or step.attempts,
            wake_at=data.retry_at,
            deadline=None,
            error=data.error.to_wire(),
        )
        return _with_step(state, step)

    # An outcome closes the step's visit.
    fresh = step.phase not in (*IN_FLIGHT, "Retrying")
    step = replace(
        step,
        attempts=record.attempt or max(step.attempts, 1 if record.type != "StepSkipped" else 0),
        started_at=record.at if fresh else step.started_at,
        finished_at=record.at,
        wake_at=None,
        deadline=None,
        visits=step.visits + (1 if fresh else 0),
    )
    consumed = state.consumed
    of: str | None = None
    if isinstance(data, r.StepCompleted):
        step = replace(step, phase="Succeeded", output=data.output, error=None)
        if data.consumed is not None:
            consumed = consumed | {data.consumed}
        of = data.of
    elif isinstance(data, r.StepSkipped):
        step = replace(step, phase="Skipped", output=None, error=None)
    else:
        assert isinstance(data, r.StepFailed)
        step = replace(step, phase="Failed", error=data.error.to_wire())
        of = data.of
    state = _with_step(state, step)

    if of is not None:
        # A compensation step: it never moves a position.
        if isinstance(data, r.StepCompleted):
            state = replace(state, compensated=(*state.compensated, of))
        return replace(state, consumed=consumed)
    if thread is not None:
        positions = {**state.positions, thread: data.next}
        state = replace(state, positions=positions, transitions=state.transitions + 1)
    else:
        state = replace(state, position=data.next, transitions=state.transitions + 1)
    state = replace(state, consumed=consumed)
    if isinstance(data, r.StepCompleted):
        state = replace(
            state,
            vars={**state.vars, **(data.vars or {})},
            completed=(*state.completed, step.name),
        )
    return state


def _with_step(state: RunState, step: StepState) -> RunState:
    return replace(state, steps={**state.steps, step.name: step})


def now_rfc3339(now: datetime | None = None) -> str:
    """`now` (default: the current time) as RFC 3339 UTC with microseconds."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
