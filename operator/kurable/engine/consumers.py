"""Consumers and topics, the deciding part: what a stream item means as a message, which
messages a consumer handles, the identity of each action, retries and where to start.

Pure: the executor (kurable.executor.consumers) reads the source stream
(kurable.store.streams), asks this module what each item is and what to do, performs the
action and commits the offset.

A message is a CloudEvents-like envelope (`id`, `key`, `type`, `source`, `time`) around
its data (`event` in CEL):

- entityType: id `<entity uid>/<version>` (the event's id), key the entity's name, type
  the event type, data the event's data;
- topic: the message's own id, key, type and data;
- workflows: id `<run uid>/<seq>`, key the run's name, type its phase, data the run
  change (kurable.engine.run_changes).

Every action's identity is derived from the consumer's uid and the message id
(`action_id`): the entity command id, the run's name (`run_name`), the HTTP
Idempotency-Key, the emitted message's id. So a message delivered again (the offset was
not yet committed when the operator died) has no second effect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from kurable.api.v1alpha1 import ConsumerSpec, TopicSpec, duration_seconds

from . import expressions, schema
from .journal import parse_time
from .names import derived_name
from .validate import Problem, model_problems

VARIABLES = ("event", "message")
"""What a consumer's filter and action expressions may read."""

CONSUMER_LABEL = "kurable.dev/consumer"
"""On each run a consumer starts: the consumer's name."""
MESSAGE_ANNOTATION = "kurable.dev/message-id"
"""On each run a consumer starts: the id of the message it handles."""


class InvalidConsumer(ValueError):
    """A Consumer whose spec cannot run; `problems` name each field and what to fix."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Message:
    """One message of a source: its envelope and its data."""

    offset: int
    id: str
    key: str
    type: str
    source: str
    time: str
    data: Any

    def envelope(self) -> dict[str, Any]:
        """`message` in CEL."""
        return {
            "id": self.id,
            "key": self.key,
            "type": self.type,
            "source": self.source,
            "time": self.time,
        }

    def context(self) -> dict[str, Any]:
        """The CEL variables of the filter and the action."""
        return {"event": self.data, "message": self.envelope()}


# -- the definition --------------------------------------------------------------------------


def consumer_problems(spec: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a Consumer's spec the CRD rules cannot see (expressions, the
    start time, durations), each with its field; empty when it can run. Whether its
    source exists is the executor's to find out."""
    try:
        parsed = ConsumerSpec.model_validate(dict(spec))
    except ValidationError as e:
        return model_problems(e, "spec")
    problems: list[Problem] = []
    action = parsed.action
    chosen = [
        name for name in ("entity", "workflow", "http", "emit") if getattr(action, name) is not None
    ]
    if len(chosen) != 1:
        problems.append(
            Problem("spec.action", "needs exactly one of entity, workflow, http and emit")
        )
    source = parsed.source
    given = [n for n in ("entityType", "topic", "workflows") if _source_field(source, n)]
    if len(given) != 1:
        problems.append(
            Problem("spec.source", "needs exactly one of entityType, topic and workflows")
        )
    checks: list[tuple[Any, str]] = [(parsed.filter, "spec.filter")]
    for name in chosen:
        checks.append((getattr(action, name).model_dump(by_alias=True), f"spec.action.{name}"))
    for value, where in checks:
        try:
            expressions.check_names(value, VARIABLES, where)
        except expressions.ExpressionError as e:
            problems.append(Problem(e.where or where, f"expression {e.expression!r}: {e.problem}"))
    if parsed.start_from not in ("beginning", "latest"):
        try:
            parse_time(parsed.start_from)
        except ValueError:
            problems.append(
                Problem("spec.startFrom", "must be beginning, latest or an RFC 3339 time")
            )
    backoff = parsed.retry.backoff if parsed.retry else None
    if backoff is not None:
        for name in ("initial", "max"):
            try:
                duration_seconds(getattr(backoff, name))
            except ValueError as e:
                problems.append(Problem(f"spec.retry.backoff.{name}", str(e)))
    return problems


def _source_field(source: Any, name: str) -> bool:
    return {
        "entityType": source.entity_type,
        "topic": source.topic,
        "workflows": source.workflows,
    }[name] is not None


def parse(spec: Mapping[str, Any]) -> ConsumerSpec:
    """The spec parsed; raises InvalidConsumer with every problem."""
    problems = consumer_problems(spec)
    if problems:
        raise InvalidConsumer(problems)
    return ConsumerSpec.model_validate(dict(spec))


def describe_source(spec: ConsumerSpec) -> str:
    """The source in words, for status and `kubectl get`."""
    source = spec.source
    if source.entity_type is not None:
        events = f" [{', '.join(source.events)}]" if source.events else ""
        return f"entityType/{source.entity_type}{events}"
    if source.topic is not None:
        return f"topic/{source.topic}"
    assert source.workflows is not None
    phases = source.workflows.phases
    shown = f" [{', '.join(phases)}]" if phases else ""
    return f"workflows/{source.workflows.template_ref.name}{shown}"


def dead_letter_topic(name: str, spec: ConsumerSpec) -> str:
    """Where a consumer's failed messages go: deadLetterTopic, else `<consumer>-dead`."""
    return spec.dead_letter_topic or f"{name}-dead"


# -- messages --------------------------------------------------------------------------------


def message_of(
    spec: ConsumerSpec, namespace: str, offset: int, value: Mapping[str, Any] | None
) -> Message | None:
    """The message a stream item of the consumer's source holds; None when the source's
    own selection (`events`, `phases`) leaves it out or the item is unreadable."""
    if not isinstance(value, Mapping):
        return None
    source = spec.source
    if source.entity_type is not None:
        if source.events and value.get("type") not in source.events:
            return None
        entity = value.get("entity") or {}
        return Message(
            offset=offset,
            id=str(value.get("id")),
            key=str(entity.get("name", "")),
            type=str(value.get("type", "")),
            source=f"/namespaces/{namespace}/entities/{entity.get('name', '')}",
            time=str(value.get("at", "")),
            data=value.get("data"),
        )
    if source.topic is not None:
        return Message(
            offset=offset,
            id=str(value.get("id")),
            key=str(value.get("key") or ""),
            type=str(value.get("type") or ""),
            source=str(value.get("source") or ""),
            time=str(value.get("time") or ""),
            data=value.get("data"),
        )
    assert source.workflows is not None
    run = value.get("run") or {}
    phases = source.workflows.phases
    if phases and run.get("phase") not in phases:
        return None
    return Message(
        offset=offset,
        id=f"{run.get('uid')}/{value.get('seq')}",
        key=str(run.get("name", "")),
        type=str(run.get("phase", "")),
        source=f"/namespaces/{namespace}/workflows/{run.get('name', '')}",
        time=str(value.get("at", "")),
        data=dict(value),
    )


def wanted(spec: ConsumerSpec, message: Message) -> bool:
    """Whether the filter lets the message through (no filter: always). Raises
    expressions.ExpressionError when it cannot be evaluated on this message."""
    if spec.filter is None:
        return True
    return expressions.condition(spec.filter, message.context())


def time_of(value: Mapping[str, Any] | None) -> datetime | None:
    """When a stream item was written (`time` of a topic message, `at` of an event or a
    run change); None when it says nothing readable."""
    if not isinstance(value, Mapping):
        return None
    text = value.get("time") or value.get("at")
    if not isinstance(text, str):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


# -- identities ------------------------------------------------------------------------------


def action_id(consumer_uid: str, message_id: str) -> str:
    """The identity of a consumer's action on one message: the entity command id, the
    HTTP Idempotency-Key, the emitted message's id."""
    return f"consumer/{consumer_uid}/{message_id}"


def run_name(consumer: str, consumer_uid: str, message_id: str) -> str:
    """The name of the run a consumer starts for one message: `<consumer>-<hash>`, the
    hash of the consumer's uid and the message id (the same on every redelivery)."""
    digest = hashlib.sha256(f"{consumer_uid}\0{message_id}".encode()).hexdigest()[:10]
    return derived_name(consumer, digest)


def dead_letter_id(consumer_uid: str, message_id: str) -> str:
    """The id of the dead letter of a message (published once however often it fails)."""
    return f"dead/{consumer_uid}/{message_id}"


# -- retries ---------------------------------------------------------------------------------


def max_attempts(spec: ConsumerSpec) -> int:
    """Attempts per message, the first included."""
    return spec.retry.max_attempts if spec.retry is not None else 10


def backoff_seconds(spec: ConsumerSpec, failed_attempts: int) -> float:
    """The pause after `failed_attempts` failures (>= 1): initial * factor^(n-1), at most max."""
    backoff = spec.retry.backoff if spec.retry is not None else None
    initial = duration_seconds(backoff.initial) if backoff else 1.0
    factor = backoff.factor if backoff else 2.0
    ceiling = duration_seconds(backoff.max) if backoff else 300.0
    exponent = min(max(failed_attempts - 1, 0), 64)
    return float(min(ceiling, initial * factor**exponent))


# -- topics ----------------------------------------------------------------------------------


def topic_problems(spec: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a Topic's spec: the message schema in the project's one schema
    dialect (kurable.engine.schema) and the retention's durations."""
    try:
        parsed = TopicSpec.model_validate(dict(spec))
    except ValidationError as e:
        return model_problems(e, "spec")
    problems = []
    if parsed.message_schema is not None:
        problems += [
            Problem("", text)
            for text in schema.check_schema(parsed.message_schema, "spec.messageSchema")
        ]
    if parsed.retention is not None and parsed.retention.max_age is not None:
        try:
            duration_seconds(parsed.retention.max_age)
        except ValueError as e:
            problems.append(Problem("spec.retention.maxAge", str(e)))
    return problems


def data_problems(spec: TopicSpec, data: Any) -> list[str]:
    """Why `data` does not fit the topic's messageSchema (empty: it fits, or no schema)."""
    if spec.message_schema is None:
        return []
    return schema.validate(spec.message_schema, data, "data")
