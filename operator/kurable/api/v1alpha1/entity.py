"""`Entity`: one durable stateful object of an EntityType."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ._base import Conditions, JSONObject, JSONValue, Model, cel, validations


class EntitySpec(Model):
    """Which EntityType, and the state the entity starts in."""

    type: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            json_schema_extra=validations(
                cel("self == oldSelf", "type is immutable; create a new Entity instead")
            ),
        ),
    ]
    """The EntityType's name."""
    initial_state: JSONObject | None = None
    """The state before the first command."""


class EntityStatus(Model):
    """A mirror of the state kept in etcd (truncated when large, never in etcd)."""

    phase: str | None = None
    """Ready or Invalid."""
    state: JSONValue = None
    """The current state."""
    state_truncated: bool | None = None
    """True when `state` is too large for status and was shortened."""
    version: int | None = None
    """Events applied."""
    last_event: JSONObject | None = None
    """Type and time of the last event."""
    message: str | None = None
    """What to fix, when Invalid."""
    observed_generation: int | None = None
    """The metadata.generation acted on."""
    conditions: Conditions | None = None
    """Ready."""
    kopf: JSONObject | None = None
    """The framework's own bookkeeping (kopf)."""
