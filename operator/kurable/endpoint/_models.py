"""The request and response bodies of the endpoint (pydantic: they make the OpenAPI document)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    """camelCase on the wire, as Kubernetes objects; unknown fields refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class CommandRequest(Body):
    """`POST .../entities/{name}/commands/{command}`."""

    input: Any = None
    """The command's input (checked against the command's schema)."""


class CommandReply(BaseModel):
    """An accepted command."""

    reply: Any = None
    """The command's reply."""
    version: int
    """The entity's version right after the command (for a resend: as first recorded)."""
    duplicate: bool = False
    """True when the Idempotency-Key had been seen: nothing changed, the reply is the first."""
    offset: int = 0
    """The etcd revision that committed the command: give it to a View query as
    `minOffset` to read this command's effect (read-your-writes)."""


class EntityState(BaseModel):
    """`GET .../entities/{name}`: an Entity's current state, from etcd."""

    model_config = ConfigDict(populate_by_name=True)

    namespace: str
    name: str
    type: str
    """The EntityType."""
    state: dict[str, Any]
    version: int
    """How many events have been applied."""
    last_event: dict[str, Any] | None = Field(default=None, alias="lastEvent")
    """`{type, at, version}` of the last event, null before the first."""


class Page(BaseModel):
    """One page of a list; `continue` is the token of the next page, null after the last."""

    model_config = ConfigDict(populate_by_name=True)

    items: list[dict[str, Any]]
    continue_: str | None = Field(default=None, alias="continue")


class TemplateName(Body):
    name: str
    """The WorkflowTemplate's name."""


class StartRun(Body):
    """`POST .../workflows`: start a run of a template."""

    template_ref: TemplateName = Field(alias="templateRef")
    input: Any = None
    """The run's input."""
    name: str | None = None
    """The run's name; default: derived from the Idempotency-Key, else generated."""
    labels: dict[str, str] | None = None
    """Labels of the Workflow object (select runs with `labelSelector`)."""


class Run(BaseModel):
    """A run as the endpoint shows it: its identity, spec flags and status."""

    model_config = ConfigDict(populate_by_name=True)

    namespace: str
    name: str
    uid: str
    template: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    suspend: bool = False
    cancel: bool = False
    phase: str | None = None
    reason: str | None = None
    message: str | None = None
    current_step: str | None = Field(default=None, alias="currentStep")
    steps: list[dict[str, Any]] = Field(default_factory=list)
    output: Any = None
    error: dict[str, Any] | None = None
    conditions: list[dict[str, Any]] = Field(default_factory=list)
    created_at: str | None = Field(default=None, alias="createdAt")
    started_at: str | None = Field(default=None, alias="startedAt")
    finished_at: str | None = Field(default=None, alias="finishedAt")


class SignalAccepted(BaseModel):
    signal: str
    duplicate: bool = False
    """True when the Idempotency-Key had been used for this signal: nothing was sent again."""


class BackfillRequest(Body):
    """`POST .../schedules/{name}/backfill`: start the run of every tick in [from, to]."""

    from_: str = Field(alias="from")
    """The range's start, inclusive: RFC 3339 with a UTC offset."""
    to: str
    """The range's end, inclusive, not in the future: RFC 3339 with a UTC offset."""


class SkippedTick(BaseModel):
    tick: str
    """The tick, RFC 3339 UTC."""
    reason: str
    """Why no run started for it (the concurrency policy)."""


class ScheduleRuns(BaseModel):
    """What a backfill did: the runs it started, the ticks whose run existed already
    (started before: nothing was done), the runs it cancelled (concurrencyPolicy Replace)
    and the ticks it skipped."""

    started: list[Run] = Field(default_factory=list)
    existing: list[str] = Field(default_factory=list)
    """Names of the runs of ticks started before."""
    cancelled: list[str] = Field(default_factory=list)
    skipped: list[SkippedTick] = Field(default_factory=list)


class PublishRequest(Body):
    """`POST .../topics/{topic}/messages`."""

    key: str | None = Field(default=None, max_length=1024)
    """The message's key: messages of one key are consumed in order."""
    data: Any = None
    """The message's data (checked against the Topic's messageSchema)."""
    type: str | None = Field(default=None, max_length=256)
    """The message's type (`message.type` in a consumer's CEL)."""


class PublishReply(BaseModel):
    """A published message."""

    id: str
    """The message id (the Idempotency-Key, else a new one)."""
    offset: int
    """Its offset in the topic (for a resend: the first publish's)."""
    duplicate: bool = False
    """True when the Idempotency-Key had been published: nothing new was written."""
