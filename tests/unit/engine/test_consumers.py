"""The deciding part of consumers: messages of each source, filters, identities, retries,
and the problems of a definition the CRD cannot see."""

from __future__ import annotations

from typing import Any

import pytest

from kurable.api.v1alpha1 import ConsumerSpec
from kurable.engine import consumers as engine
from kurable.engine.expressions import ExpressionError

TOPIC_ACTION = {"emit": {"topic": "out", "data": "${ event }"}}


def spec(**fields: Any) -> ConsumerSpec:
    fields.setdefault("source", {"topic": "in"})
    fields.setdefault("action", TOPIC_ACTION)
    return ConsumerSpec.model_validate(fields)


def test_an_entity_event_is_a_message_keyed_by_the_entity_and_selected_by_type() -> None:
    consumer = spec(source={"entityType": "order", "events": ["OrderPlaced"]})
    event = {
        "type": "OrderPlaced",
        "data": {"total": 5},
        "at": "2026-01-01T00:00:00Z",
        "id": "u1/3",
        "entity": {"name": "order-1", "uid": "u1"},
    }
    message = engine.message_of(consumer, "shop", 42, event)
    assert message is not None
    assert message.context() == {
        "event": {"total": 5},
        "message": {
            "id": "u1/3",
            "key": "order-1",
            "type": "OrderPlaced",
            "source": "/namespaces/shop/entities/order-1",
            "time": "2026-01-01T00:00:00Z",
        },
    }
    assert engine.message_of(consumer, "shop", 43, {**event, "type": "OrderCancelled"}) is None


def test_a_run_change_is_a_message_of_the_run_selected_by_phase() -> None:
    consumer = spec(source={"workflows": {"templateRef": {"name": "x"}, "phases": ["Failed"]}})
    change = {"run": {"name": "r", "uid": "u", "phase": "Failed"}, "seq": 7, "at": "t"}
    message = engine.message_of(consumer, "ns", 1, change)
    assert message is not None and (message.id, message.key, message.type) == ("u/7", "r", "Failed")
    assert message.data == change
    running = {**change, "run": {**change["run"], "phase": "Running"}}
    assert engine.message_of(consumer, "ns", 1, running) is None


def test_the_filter_sees_event_and_message_and_must_be_a_boolean() -> None:
    message = engine.Message(1, "i", "k", "T", "s", "t", {"n": 3})
    assert engine.wanted(spec(filter="${ event.n > 2 && message.key == 'k' }"), message)
    assert not engine.wanted(spec(filter="event.n > 3"), message)
    with pytest.raises(ExpressionError):
        engine.wanted(spec(filter="event.n"), message)


def test_identities_are_derived_from_the_consumer_and_the_message_id() -> None:
    assert engine.action_id("uid", "m/1") == "consumer/uid/m/1"
    name = engine.run_name("reserve", "uid", "m/1")
    assert (
        name == engine.run_name("reserve", "uid", "m/1") != engine.run_name("reserve", "uid", "m/2")
    )
    assert name.startswith("reserve-") and len(name) <= 253
    assert engine.dead_letter_id("uid", "m/1") != engine.action_id("uid", "m/1")


def test_backoff_grows_by_the_factor_up_to_max() -> None:
    consumer = spec(
        retry={"maxAttempts": 5, "backoff": {"initial": "1s", "factor": 3, "max": "10s"}}
    )
    assert [engine.backoff_seconds(consumer, n) for n in (1, 2, 3, 4)] == [1.0, 3.0, 9.0, 10.0]
    assert engine.max_attempts(consumer) == 5 and engine.max_attempts(spec()) == 10


def test_problems_name_the_field() -> None:
    problems = engine.consumer_problems(
        {
            "source": {"topic": "in"},
            "filter": "${ event. }",
            "action": {"entity": {"name": "${ input.x }", "command": "c"}},
        }
    )
    paths = [p.path for p in problems]
    assert paths == ["spec.filter", "spec.action.entity.name"], problems
    assert (
        engine.consumer_problems(
            {"source": {"topic": "in"}, "action": {**TOPIC_ACTION, "http": {"url": "u"}}}
        )[0].path
        == "spec.action"
    )
    assert engine.consumer_problems({"source": {"topic": "in"}, "action": TOPIC_ACTION}) == []


def test_a_topic_schema_is_checked_and_applied_to_data() -> None:
    assert engine.topic_problems({"messageSchema": {"type": "strnig"}})
    assert engine.topic_problems({"retention": {"maxAge": "1h"}}) == []
    from kurable.api.v1alpha1 import TopicSpec

    topic = TopicSpec.model_validate({"messageSchema": {"type": "object", "required": ["a"]}})
    assert engine.data_problems(topic, {"a": 1}) == []
    assert engine.data_problems(topic, {}) != []
