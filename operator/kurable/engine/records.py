"""The payload of each journal record type: the journal's durable format, typed and versioned.

A journal outlives operator versions: a run started by one version is resumed by the next.
Each record type has a model here; its JSON (camelCase, as stored in etcd under the
record's `data` key) is the format. `WorkflowStarted.formatVersion` says which format the
whole journal is written in:

- 1: the format of Kurable's first releases. Journals written before `formatVersion` existed
  carry none; absent means 1.
- 2: `SignalReceived` may carry `source: "endpoint"` (a signal sent through the endpoint)
  and `idempotencyKey` (the SHA-256, hex, of the Idempotency-Key it was sent with), and
  `WorkflowStarted` may carry `traceparent`. Every new run is written as version 2; a
  journal of version 1 is never given these keys, also when a newer operator resumes it.

Reading is strict (an unknown key is an error, not silently dropped), so that a journal
written by a newer format is refused clearly instead of being replayed wrongly. Writing
keeps exactly the keys a record was made with (`to_wire`), so a record read and written
back is unchanged. A change to this format adds a version and keeps reading the old one;
the golden journals in tests/unit/engine/journals/ replay every version in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

FORMAT_VERSION = 2
"""The journal format this operator writes (and the newest it reads)."""
ENDPOINT_SIGNALS_VERSION = 2
"""The first format whose SignalReceived records may name the endpoint as their source."""

RecordType = Literal[
    "WorkflowStarted",
    "SignalReceived",
    "StepStarted",
    "StepCompleted",
    "StepFailed",
    "StepSkipped",
    "RunFailing",
    "WorkflowFinished",
]


class UnsupportedFormat(ValueError):
    """A journal written in a format this operator does not read (a newer operator's)."""


class Payload(BaseModel):
    """The typed `data` of one journal record."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    def to_wire(self) -> dict[str, Any]:
        """The JSON stored in etcd: exactly the keys the record was made with (camelCase)."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class StepErrorInfo(Payload):
    """Why an attempt failed: {kind, message}; `kind` is what `retryOn` matches."""

    kind: str
    message: str


class RunError(Payload):
    """Why a run fails (RunFailing), and the error a finished run reports."""

    step: str | None = None
    """The step that failed, if a step did."""
    reason: str
    """A CamelCase reason: StepFailed, Timeout, Cancelled, Compensated, ..."""
    message: str
    cause: Any = None
    """For Compensated: the reason compensation began; for CompensationFailed: the
    error that started it ({step, reason, message})."""


class WorkflowStarted(Payload):
    """The first record: the pinned definition and where the run came from."""

    format_version: int = Field(default=1, alias="formatVersion")
    """The journal's format (see the module docstring); absent in journals of version 1."""
    definition: dict[str, Any]
    """The resolved WorkflowSpec (wire form) the run runs to its end."""
    input: Any = None
    workflow: dict[str, str] = Field(default_factory=dict)
    """name, namespace and uid of the run."""
    first: str | None = None
    """The first step (None for a run without steps)."""
    deadline: str | None = None
    """When the whole run times out (RFC 3339), if it has a timeout."""
    template: dict[str, Any] | None = None
    """The WorkflowTemplate it was pinned from: {name, generation, uid}."""
    traceparent: str | None = None
    """The W3C `traceparent` of the request that started the run (format 2): the run's
    trace continues it, before and after any restart."""


class SignalReceived(Payload):
    """A signal, journaled when it arrives (before or while a wait step waits for it).

    One record per send, whatever route it took (engine/signals.py: an annotation is
    consumed once journaled, so a resend is a new record)."""

    name: str
    payload: Any = None
    source: Literal["annotation", "endpoint"] | None = None
    """The route of the send; absent: an annotation (the only route of format 1). Format 2
    writes `endpoint` for a signal the endpoint sent (still through the annotation)."""
    idempotency_key: str | None = Field(default=None, alias="idempotencyKey")
    """Format 2: the SHA-256 (hex) of the endpoint request's Idempotency-Key, so that a
    resend can tell whether its first send arrived."""


class StepStarted(Payload):
    """An attempt began."""

    thread: str | None = None
    """The branch (`P.branch`) or forEach item (`F[3]`) the step runs in; absent: the run."""
    wake_at: str | None = Field(default=None, alias="wakeAt")
    """A sleep's wake-up time (RFC 3339)."""
    deadline: str | None = None
    """When this attempt times out (RFC 3339)."""
    signal: str | None = None
    """The signal a wait step waits for."""
    items: list[Any] | None = None
    """A forEach step's items, pinned so that a replay iterates the same list."""


class StepCompleted(Payload):
    """An attempt succeeded; the step's visit ends."""

    output: Any = None
    next: str | None = None
    """Where the run (or the thread) goes; None: past the last step."""
    thread: str | None = None
    vars: dict[str, Any] | None = None
    """A `set` step's values, merged into the run's vars."""
    consumed: int | None = None
    """The seq of the SignalReceived record a wait step took."""
    of: str | None = None
    """For a compensation (`<step>:compensate`): the step it undid."""


class StepFailed(Payload):
    """An attempt failed: retried at `retryAt`, else the visit ends (failed)."""

    error: StepErrorInfo
    thread: str | None = None
    retry_at: str | None = Field(default=None, alias="retryAt")
    """When the next attempt is due (RFC 3339); absent: no attempt follows."""
    next: str | None = None
    """Where the run goes: onFailure's goto, else the failed step itself (the scope fails)."""
    of: str | None = None
    """For a compensation: the step it was undoing."""


class StepSkipped(Payload):
    """A step's `when` was false: no effects, its `next` jump included."""

    next: str | None = None
    thread: str | None = None


class RunFailing(Payload):
    """The run failed, timed out or was cancelled: compensation begins."""

    phase: str
    """The terminal phase it will end in: Failed or Cancelled."""
    error: RunError


class WorkflowFinished(Payload):
    """The end."""

    phase: str
    """Succeeded, Failed, Cancelled or Invalid."""
    reason: str | None = None
    output: Any = None
    error: RunError | None = None


RecordData = (
    WorkflowStarted
    | SignalReceived
    | StepStarted
    | StepCompleted
    | StepFailed
    | StepSkipped
    | RunFailing
    | WorkflowFinished
)

PAYLOADS: dict[str, type[RecordData]] = {
    "WorkflowStarted": WorkflowStarted,
    "SignalReceived": SignalReceived,
    "StepStarted": StepStarted,
    "StepCompleted": StepCompleted,
    "StepFailed": StepFailed,
    "StepSkipped": StepSkipped,
    "RunFailing": RunFailing,
    "WorkflowFinished": WorkflowFinished,
}
"""The payload model of each record type."""


def read_payload(type_: str, data: dict[str, Any]) -> RecordData:
    """The typed payload of a record of type `type_` from its stored `data`.

    Raises UnsupportedFormat for an unknown record type or a newer format version, and
    pydantic's ValidationError for a payload that does not match its type.
    """
    model = PAYLOADS.get(type_)
    if model is None:
        raise UnsupportedFormat(
            f"unknown journal record type {type_!r}: written by a newer operator? "
            f"(this one reads format version {FORMAT_VERSION})"
        )
    payload = model.model_validate(data)
    if isinstance(payload, WorkflowStarted) and payload.format_version > FORMAT_VERSION:
        raise UnsupportedFormat(
            f"the journal is in format version {payload.format_version}; this operator reads "
            f"versions up to {FORMAT_VERSION}: upgrade the operator"
        )
    return payload


def typed_payload(type_: str, data: Any) -> RecordData:
    """`data` as the payload model of `type_`: a model is checked to be the right one, a
    mapping (or None, the empty payload) is read with `read_payload`.

    Raises TypeError for a model of another record type, else as `read_payload`.
    """
    if data is None or isinstance(data, Mapping):
        return read_payload(type_, dict(data or {}))
    if not isinstance(data, PAYLOADS[type_]):
        raise TypeError(f"a {type_} record holds a {type(data).__name__} payload")
    return data
