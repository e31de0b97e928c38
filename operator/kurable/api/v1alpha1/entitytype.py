"""`EntityType`: the state schema, commands and event handlers of a kind of Entity."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ._base import (
    Conditions,
    Expression,
    JSONObject,
    JSONValue,
    Model,
    Name,
    UserSchema,
    cel,
    validations,
)


class Guard(Model):
    """A rule that must hold for a command to be accepted."""

    rule: Expression
    """CEL over `state` and `input`; false rejects the command."""
    message: str | None = None
    """The rejection message."""
    message_expression: Expression | None = None
    """CEL giving the rejection message."""


class EventSpec(Model):
    """An event a command emits."""

    type: Name
    """The event type, declared under `events`."""
    data: JSONValue = None
    """The event's data (`${ }` expressions over `state` and `input`)."""


class HttpHandler(Model):
    """A service deciding a command: gets `{state, command, input}`, answers `{events, reply}`."""

    url: Annotated[str, Field(min_length=1, max_length=2048)]
    """The handler's URL."""


class Handler(Model):
    """Delegate a command's decision to code outside the operator."""

    http: HttpHandler
    """An HTTP handler."""


class Command(Model):
    """A command: validated input, guards, the events it emits, the reply."""

    input_schema: UserSchema | None = None
    """OpenAPI v3 schema of the input."""
    guards: list[Guard] | None = None
    """Rules that must hold, checked in order."""
    emit: Annotated[list[EventSpec], Field(max_length=50)] | None = None
    """Events to append when accepted (at most 50: they commit in one etcd transaction)."""
    reply: JSONValue = None
    """The reply, evaluated after the events are applied."""
    handler: Handler | None = None
    """Decide the command with an external handler instead of guards and emit."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "!(has(self.handler) && (has(self.emit) || has(self.guards)))",
                "a command has either a handler or guards/emit, not both",
            )
        )
    }


class EventHandler(Model):
    """How an event changes the state."""

    set: JSONObject
    """State fields to assign; values are `${ }` expressions over `state` and `event`."""


class EntityTypeSpec(Model):
    """State schema, commands and event handlers."""

    state_schema: UserSchema
    """OpenAPI v3 schema of the state, checked after every change."""
    commands: Annotated[dict[str, Command], Field(min_length=1)]
    """The commands, by name."""
    events: dict[str, EventHandler]
    """The event handlers, by event type."""
    snapshot_every: Annotated[int, Field(ge=1, le=100000)] = 100
    """Write a snapshot every this many events, bounding replay time."""


class EntityTypeStatus(Model):
    """The operator's verdict on the definition."""

    phase: str | None = None
    """Valid or Invalid."""
    message: str | None = None
    """What to fix, when Invalid."""
    observed_generation: int | None = None
    """The metadata.generation validated."""
    conditions: Conditions | None = None
    """Ready."""
    kopf: JSONObject | None = None
    """The framework's own bookkeeping (kopf)."""
