"""Topics: publishing (for the `emit` step, consumers and the endpoint) and retention.

Every publisher goes through `publish_message`: the Topic must exist, the data must fit
its `messageSchema`, and the message id makes a second publish of the same message a
no-op (kurable.store.topics). `TopicKeeper` trims a Topic by its retention and projects
its status; kurable.handlers.topic calls it on a timer, on the replica owning the Topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import aetcd

from kurable.api.v1alpha1 import TOPIC, TopicSpec, duration_seconds
from kurable.engine import consumers as engine
from kurable.engine.conditions import updated_condition
from kurable.engine.journal import now_rfc3339
from kurable.engine.validate import describe
from kurable.store import topics as store
from kurable.store.topics import MessageConflict, Published

from .runtime import Runtime

__all__ = [
    "InvalidMessage",
    "MessageConflict",
    "Published",
    "TopicNotFound",
    "keep_topic",
    "publish_message",
]


class TopicNotFound(Exception):
    """The Topic does not exist (or is Invalid): nothing was published."""


class InvalidMessage(ValueError):
    """The data does not fit the Topic's messageSchema; `problems` name each path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


async def publish_message(
    etcd: aetcd.Client,
    prefix: str,
    topic: Mapping[str, Any] | None,
    *,
    namespace: str,
    name: str,
    id: str,
    key: str,
    data: Any,
    type: str,
    source: str,
    time: str | None = None,
) -> Published:
    """Publish one message to Topic `name` (the object `topic`, None when it does not
    exist) exactly once per `id`. Raises TopicNotFound, InvalidMessage (schema) and
    MessageConflict (the id was published with another key or data)."""
    if topic is None:
        raise TopicNotFound(f"Topic {name!r} not found in namespace {namespace}")
    if ((topic.get("status") or {}).get("conditions") or []) and _invalid(topic):
        raise TopicNotFound(f"Topic {name!r} is Invalid: {topic['status'].get('message')}")
    spec = TopicSpec.model_validate(topic.get("spec") or {})
    problems = engine.data_problems(spec, data)
    if problems:
        raise InvalidMessage(problems)
    stored = store.message(id, key, data, type=type, source=source, time=time or now_rfc3339())
    return await store.publish(etcd, prefix, namespace, name, stored)


async def publish_unchecked(
    etcd: aetcd.Client,
    prefix: str,
    *,
    namespace: str,
    name: str,
    id: str,
    key: str,
    data: Any,
    type: str,
    source: str,
) -> Published:
    """Publish without a Topic object (dead letters: their log exists whether or not a
    Topic of that name is declared; declaring one lets consumers read it)."""
    stored = store.message(id, key, data, type=type, source=source, time=now_rfc3339())
    return await store.publish(etcd, prefix, namespace, name, stored)


def _invalid(topic: Mapping[str, Any]) -> bool:
    for condition in (topic.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("reason") == "Invalid":
            return True
    return False


async def keep_topic(runtime: Runtime, body: Mapping[str, Any]) -> None:
    """Trim Topic `body` by its retention and patch its status (head, size, trimmed)."""
    meta = body["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation")
    previous = (body.get("status") or {}).get("conditions")
    problems = engine.topic_problems(body.get("spec") or {})
    if problems:
        message = describe(problems)
        ready = updated_condition(
            "Ready", "False", "Invalid", message, generation, previous, now_rfc3339()
        )
        patch: dict[str, Any] = {
            "message": message,
            "observedGeneration": generation,
            "conditions": [ready.to_status()],
        }
        await runtime.patch_status(TOPIC, namespace, name, patch)
        return
    spec = TopicSpec.model_validate(body.get("spec") or {})
    retention = spec.retention
    if retention is not None and (retention.max_age or retention.max_messages):
        await store.trim(
            runtime.etcd,
            runtime.prefix,
            namespace,
            name,
            max_age_seconds=duration_seconds(retention.max_age) if retention.max_age else None,
            max_messages=retention.max_messages,
            now=datetime.now(UTC),
        )
    numbers = await store.state(runtime.etcd, runtime.prefix, namespace, name)
    ready = updated_condition(
        "Ready", "True", "Ready", "accepting messages", generation, previous, now_rfc3339()
    )
    await runtime.patch_status(
        TOPIC,
        namespace,
        name,
        {
            "head": numbers.head,
            "first": numbers.first,
            "messages": numbers.messages,
            "trimmed": numbers.trimmed,
            "message": None,
            "observedGeneration": generation,
            "conditions": [ready.to_status()],
        },
    )
