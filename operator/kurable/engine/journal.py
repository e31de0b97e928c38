"""The journal of a workflow run, and the replay that turns it into the run's state.

A journal is an append-only list of records, one per decision that was committed:
the run started (with its pinned definition), a step started (with its wake-up time
when it is a timer), a step completed / failed / was skipped, the run finished. The
state of a run is a pure fold of its journal; nothing else is remembered.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

RecordType = Literal[
    "WorkflowStarted",
    "StepStarted",
    "StepCompleted",
    "StepFailed",
    "StepSkipped",
    "WorkflowFinished",
]

TERMINAL_PHASES = ("Succeeded", "Failed", "Cancelled", "Invalid")


@dataclass(frozen=True)
class Record:
    """One committed journal entry."""

    seq: int
    """Position in the journal, from 0; also the etcd key suffix."""
    type: RecordType
    at: str
    """When it was committed (RFC 3339, UTC)."""
    step: str | None = None
    attempt: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    executor: str | None = None
    """Which operator instance committed it (for audits and crash tests)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "type": self.type, "at": self.at}
        if self.step is not None:
            out["step"] = self.step
        if self.attempt is not None:
            out["attempt"] = self.attempt
        if self.data:
            out["data"] = self.data
        if self.executor is not None:
            out["executor"] = self.executor
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Record:
        return cls(
            seq=int(raw["seq"]),
            type=raw["type"],
            at=raw["at"],
            step=raw.get("step"),
            attempt=raw.get("attempt"),
            data=raw.get("data") or {},
            executor=raw.get("executor"),
        )


@dataclass(frozen=True)
class StepState:
    """What the journal says about one step (its latest visit)."""

    name: str
    phase: str = "Pending"
    attempts: int = 0
    started_at: str | None = None
    finished_at: str | None = None
    wake_at: str | None = None
    output: Any = None
    message: str | None = None
    visits: int = 0


@dataclass(frozen=True)
class RunState:
    """The state of a run, replayed from its journal."""

    definition: dict[str, Any] | None = None
    """The pinned definition (steps, output, retry, timeout) from WorkflowStarted."""
    input: Any = None
    workflow: dict[str, Any] = field(default_factory=dict)
    """name, namespace and uid of the run, as expressions see them."""
    started_at: str | None = None
    position: str | None = None
    """The step to run next (None once past the last step)."""
    steps: dict[str, StepState] = field(default_factory=dict)
    completed: tuple[str, ...] = ()
    """Steps in the order they completed (the order compensation reverses)."""
    vars: dict[str, Any] = field(default_factory=dict)
    transitions: int = 0
    phase: str | None = None
    """Terminal phase once WorkflowFinished is journaled."""
    finished_at: str | None = None
    output: Any = None
    error: dict[str, Any] | None = None
    records: int = 0

    @property
    def finished(self) -> bool:
        return self.phase in TERMINAL_PHASES

    def step(self, name: str) -> StepState:
        return self.steps.get(name) or StepState(name=name)


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
    if record.type == "WorkflowStarted":
        return replace(
            state,
            definition=data["definition"],
            input=data.get("input"),
            workflow=data.get("workflow") or {},
            started_at=record.at,
            position=data.get("first"),
        )
    if record.type == "WorkflowFinished":
        return replace(
            state,
            phase=data["phase"],
            finished_at=record.at,
            output=data.get("output"),
            error=data.get("error"),
            position=None,
        )
    assert record.step is not None, f"record {record.seq} ({record.type}) names no step"
    step = state.step(record.step)
    if record.type == "StepStarted":
        new_visit = step.phase in ("Pending", "Succeeded", "Skipped", "Failed")
        step = replace(
            step,
            phase="Waiting" if data.get("wakeAt") else "Running",
            attempts=record.attempt or 1,
            started_at=record.at if new_visit else step.started_at,
            finished_at=None,
            wake_at=data.get("wakeAt"),
            message=None if new_visit else step.message,
            visits=step.visits + (1 if new_visit else 0),
        )
        return _with_step(state, step)
    # The outcome records close the step and say where the run goes next.
    moved = replace(
        state,
        position=data.get("next"),
        transitions=state.transitions + 1,
    )
    if record.type == "StepCompleted":
        step = replace(
            step,
            phase="Succeeded",
            attempts=record.attempt or max(step.attempts, 1),
            started_at=step.started_at if step.phase in ("Running", "Waiting") else record.at,
            finished_at=record.at,
            wake_at=None,
            output=data.get("output"),
            message=None,
            visits=step.visits + (0 if step.phase in ("Running", "Waiting") else 1),
        )
        moved = replace(
            moved,
            vars={**state.vars, **(data.get("vars") or {})},
            completed=(*state.completed, step.name),
        )
    elif record.type == "StepSkipped":
        step = replace(step, phase="Skipped", finished_at=record.at, visits=step.visits + 1)
    elif record.type == "StepFailed":
        step = replace(
            step,
            phase="Failed",
            attempts=record.attempt or max(step.attempts, 1),
            finished_at=record.at,
            wake_at=None,
            message=(data.get("error") or {}).get("message"),
        )
    return _with_step(moved, step)


def _with_step(state: RunState, step: StepState) -> RunState:
    return replace(state, steps={**state.steps, step.name: step})


def now_rfc3339(now: datetime | None = None) -> str:
    """`now` (default: the current time) as RFC 3339 UTC with milliseconds."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
