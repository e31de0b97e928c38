"""`Consumer`: reacts to entity events, topic messages or run changes, exactly once in effect."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._base import (
    Conditions,
    Duration,
    Expression,
    JSONObject,
    JSONValue,
    Model,
    Name,
    ObjectRef,
    cel,
    validations,
)
from .workflow import Header

START_FROM_PATTERN = (
    r"^(beginning|latest|[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2}))$"
)
RUN_PHASES = ("Running", "Succeeded", "Failed", "Cancelled", "Invalid")
"""The phases a run change can have (kurable.engine.run_changes)."""


class RunsSource(Model):
    """Changes of the runs of one WorkflowTemplate."""

    template_ref: ObjectRef
    """The WorkflowTemplate whose runs are followed."""
    phases: list[Literal["Running", "Succeeded", "Failed", "Cancelled", "Invalid"]] | None = None
    """Only changes into these phases (default: every change)."""


class Source(Model):
    """What the consumer reads: exactly one of entityType, topic and workflows."""

    entity_type: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """The events of every Entity of this EntityType (key: the entity's name)."""
    events: list[Name] | None = None
    """With entityType: only these event types (default: all)."""
    topic: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """The messages of this Topic (key: the message's key)."""
    workflows: RunsSource | None = None
    """The phase changes of a template's runs (key: the run's name)."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[has(self.entityType), has(self.topic), has(self.workflows)]"
                ".filter(x, x).size() == 1",
                "spec.source needs exactly one of entityType, topic and workflows",
            ),
            cel("!has(self.events) || has(self.entityType)", "events applies to entityType only"),
        )
    }


class EntityAction(Model):
    """Send a command to an Entity (its id derived from the message id)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """The Entity's name (may be a `${ }` expression)."""
    command: Name
    """The command, as its EntityType declares it."""
    input: JSONValue = None
    """The command's input (`${ }` expressions over `event` and `message`)."""


class WorkflowAction(Model):
    """Start a run of a template (named from the message id)."""

    template_ref: ObjectRef
    """The WorkflowTemplate to run."""
    input: JSONValue = None
    """The run's input (`${ }` expressions over `event` and `message`)."""


class HttpAction(Model):
    """Call a service; the `Idempotency-Key` header is derived from the message id."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    """HTTP method."""
    url: Annotated[str, Field(min_length=1, max_length=2048)]
    """URL (may contain `${ }` expressions)."""
    headers: list[Header] | None = None
    """Request headers: a value (may contain `${ }`) or a value from a Secret."""
    body: JSONValue = None
    """Request body, sent as JSON (`${ }` expressions are evaluated)."""
    timeout: Duration | None = None
    """Per-request timeout (default 30s)."""


class EmitAction(Model):
    """Publish a message (its id derived from the consumed message's id)."""

    topic: Annotated[str, Field(min_length=1, max_length=253)]
    """The Topic."""
    key: Expression | None = None
    """The message's key (default: the consumed message's key)."""
    data: JSONValue = None
    """The message's data (`${ }` expressions over `event` and `message`)."""


class Action(Model):
    """What the consumer does with each message: exactly one of these."""

    entity: EntityAction | None = None
    workflow: WorkflowAction | None = None
    http: HttpAction | None = None
    emit: EmitAction | None = None

    model_config = {
        "json_schema_extra": validations(
            cel(
                "[has(self.entity), has(self.workflow), has(self.http), has(self.emit)]"
                ".filter(x, x).size() == 1",
                "spec.action needs exactly one of entity, workflow, http and emit",
            )
        )
    }


class Backoff(Model):
    """The pause between attempts: initial, times factor after each, at most max."""

    initial: Duration = "1s"
    factor: Annotated[float, Field(ge=1, le=100)] = 2.0
    max: Duration = "5m"


class Retry(Model):
    """How often a failing message is tried before onFailure applies."""

    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 10
    """Attempts in all (the first included)."""
    backoff: Backoff | None = None
    """The pause between attempts (default 1s, doubling, at most 5m)."""


class ConsumerSpec(Model):
    """A source, an optional filter, one action, and what to do when it keeps failing."""

    source: Source
    """What is consumed."""
    filter: Expression | None = None
    """CEL over `event` (the data) and `message` (the envelope: id, key, type, source,
    time); a message for which it is false is skipped."""
    action: Action
    """What each message does."""
    concurrency: Annotated[int, Field(ge=1, le=256)] = 1
    """Keys handled at once; the messages of one key stay in order."""
    retry: Retry | None = None
    """Attempts per message (default 10, backoff 1s doubling to 5m)."""
    on_failure: Literal["deadLetter", "block"] = "deadLetter"
    """After the last attempt: deadLetter (publish the message with its error to
    deadLetterTopic and move on) or block (stop: Stalled, reason PoisonMessage)."""
    dead_letter_topic: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """Where failed messages go (default `<consumer>-dead`)."""
    start_from: Annotated[
        str,
        Field(
            max_length=64,
            json_schema_extra=validations(
                cel(
                    f"self.matches('{START_FROM_PATTERN}')",
                    "startFrom must be beginning, latest or an RFC 3339 time",
                )
            ),
        ),
    ] = "beginning"
    """Where a new consumer starts: beginning, latest, or the first message at or after
    an RFC 3339 time. Changing it moves the offset there."""
    suspend: bool = False
    """Stop consuming (the offset stays)."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!has(self.deadLetterTopic) || !has(self.onFailure) || "
                "self.onFailure == 'deadLetter'",
                "deadLetterTopic applies to onFailure: deadLetter only",
            )
        )
    }


class ConsumerStatus(Model):
    """Written by the operator only: where the consumer is."""

    source: str | None = None
    """The source in words (`entityType/order [OrderPlaced]`, `topic/orders`)."""
    offset: int | None = None
    """The offset of the last message handled (etcd revision); every message up to it is
    handled."""
    lag: int | None = None
    """Messages of the source after the offset."""
    processed: int | None = None
    """Messages whose action succeeded (or that the filter skipped)."""
    failed: int | None = None
    """Attempts that failed."""
    dead_lettered: int | None = None
    """Messages sent to the dead-letter topic."""
    last_error: str | None = None
    """The latest failure: the message id and why."""
    message: str | None = None
    """What is happening, or what to fix."""
    observed_generation: int | None = None
    """The metadata.generation acted on."""
    conditions: Conditions | None = None
    """Ready (consuming), Degraded (a message is failing), Stalled (stopped: PoisonMessage,
    OffsetTrimmed; or Invalid, SourceNotFound under Ready)."""
    kopf: JSONObject | None = None
    """The framework's own bookkeeping (kopf)."""
