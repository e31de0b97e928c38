"""`Topic`: a durable, ordered message log in etcd (per namespace)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ._base import Conditions, Duration, JSONObject, Model, UserSchema


class Retention(Model):
    """How long messages are kept: the older ones are trimmed (either limit trims)."""

    max_age: Duration | None = None
    """Messages older than this (by their `time`) are deleted, e.g. `168h`."""
    max_messages: Annotated[int, Field(ge=1)] | None = None
    """At most this many messages are kept; the oldest beyond it are deleted."""


class TopicSpec(Model):
    """Retention and the optional schema of the messages' data."""

    retention: Retention | None = None
    """When messages are trimmed; without it, messages are kept until the Topic is deleted."""
    message_schema: UserSchema | None = None
    """OpenAPI v3 schema of each message's `data` (the dialect of EntityType schemas): a
    publish whose data does not fit is refused."""


class TopicStatus(Model):
    """Written by the operator only."""

    head: int | None = None
    """The newest message's offset (etcd revision); 0 while empty."""
    first: int | None = None
    """The oldest message's offset still kept."""
    messages: int | None = None
    """How many messages the topic holds."""
    trimmed: int | None = None
    """Messages deleted by retention so far."""
    message: str | None = None
    """What is happening, or what to fix."""
    observed_generation: int | None = None
    """The metadata.generation acted on."""
    conditions: Conditions | None = None
    """Ready: True when the definition is usable; False with reason Invalid (the message
    names the field)."""
    kopf: JSONObject | None = None
    """The framework's own bookkeeping (kopf)."""
