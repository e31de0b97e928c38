"""Consumers and topics on the real control plane: per-key order and exactly-once effects,
filters, dead letters and blocking on a poison message, retention and a consumer behind
it, run changes and the `emit` step, and definitions refused or marked Invalid."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from kurable.store import keys, streams
from kurable.store import topics as store
from kurable.store.journal import EtcdConfig, connect
from kurable.testing import ControlPlane, OperatorProcess

from .conftest import apply, eventually, get, refused, wait_phase, workflow

pytestmark = pytest.mark.integration

PREFIX = "/kurable/"
T = TypeVar("T")

LOG_TYPE = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "EntityType",
    "metadata": {"name": "log"},
    "spec": {
        "stateSchema": {
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
        },
        "commands": {
            "append": {"emit": [{"type": "Appended", "data": {"n": "${ input.n }"}}]},
        },
        "events": {"Appended": {"set": {"items": "${ state.items + [event.n] }"}}},
    },
}


def kind(kind_: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": kind_,
        "metadata": {"name": name},
        "spec": spec,
    }


def log_entity(name: str) -> dict[str, Any]:
    return kind("Entity", name, type="log", initialState={"items": []})


def in_etcd(cp: ControlPlane, action: Callable[[Any], Awaitable[T]]) -> T:
    async def run() -> T:
        etcd = await connect(EtcdConfig(endpoints=cp.etcd_endpoint, prefix=PREFIX))
        try:
            return await action(etcd)
        finally:
            await etcd.close()

    return asyncio.run(run())


def publish(cp: ControlPlane, namespace: str, topic: str, messages: list[tuple[str, str, Any]]):
    """Publish (id, key, data) messages straight into the topic's log, in order."""

    async def run(etcd: Any) -> list[store.Published]:
        return [
            await store.publish(
                etcd,
                PREFIX,
                namespace,
                topic,
                store.message(i, k, d, type="t", source="test", time="2026-01-01T00:00:00Z"),
            )
            for i, k, d in messages
        ]

    return in_etcd(cp, run)


def messages(cp: ControlPlane, namespace: str, topic: str) -> list[dict[str, Any]]:
    stream = keys.topic_messages(PREFIX, namespace, topic)
    return in_etcd(cp, lambda etcd: _values(streams.read(etcd, stream, 0, 1000)))


async def _values(reading: Awaitable[list[streams.StreamItem]]) -> list[dict[str, Any]]:
    return [item.value or {} for item in await reading]


def consumer_status(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return get(cp, namespace, f"consumer/{name}").get("status") or {}


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def test_a_topic_consumer_applies_each_message_once_in_key_order_across_keys(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, LOG_TYPE)
    for key in "abc":
        apply(cp, namespace, log_entity(f"log-{key}"))
    apply(cp, namespace, kind("Topic", "in"))
    sent = [(f"m-{key}-{n}", key, {"n": n}) for n in range(8) for key in "abc"]
    # A publisher retrying: the same ids again add nothing.
    first = publish(cp, namespace, "in", sent)
    again = publish(cp, namespace, "in", sent[:3])
    assert [p.duplicate for p in again] == [True] * 3
    assert [p.offset for p in again] == [p.offset for p in first[:3]]
    apply(
        cp,
        namespace,
        kind(
            "Consumer",
            "append",
            source={"topic": "in"},
            filter="${ event.n != 5 }",
            action={
                "entity": {
                    "name": "${ 'log-' + message.key }",
                    "command": "append",
                    "input": {"n": "${ event.n }"},
                }
            },
            concurrency=3,
        ),
    )
    status = eventually(
        lambda: consumer_status(cp, namespace, "append"),
        lambda s: s.get("lag") == 0 and s.get("processed") == 21,
        90,
        "the consumer to handle every message",
    )
    assert status["offset"] == first[-1].offset
    assert status["failed"] == 0 and status["deadLettered"] == 0
    assert condition(status, "Ready")["status"] == "True"
    for key in "abc":
        state = get(cp, namespace, f"entity/log-{key}")["status"]["state"]
        assert state["items"] == [0, 1, 2, 3, 4, 6, 7], key
    header, row = cp.kubectl("get", "-n", namespace, "consumers").stdout.splitlines()[:2]
    assert header.split() == ["NAME", "SOURCE", "LAG", "PROCESSED", "AGE"]
    assert row.split()[1:4] == ["topic/in", "0", "21"]


def test_a_failing_message_is_dead_lettered_or_blocks_the_consumer(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, LOG_TYPE)
    apply(cp, namespace, log_entity("log-ok"))
    apply(cp, namespace, kind("Topic", "work"))
    publish(
        cp,
        namespace,
        "work",
        [("1", "ok", {"n": 1}), ("2", "missing", {"n": 2}), ("3", "ok", {"n": 3})],
    )
    action = {
        "entity": {
            "name": "${ 'log-' + message.key }",
            "command": "append",
            "input": {"n": "${ event.n }"},
        }
    }
    retry = {"maxAttempts": 2, "backoff": {"initial": "100ms"}}
    apply(
        cp, namespace, kind("Consumer", "dl", source={"topic": "work"}, action=action, retry=retry)
    )
    apply(
        cp,
        namespace,
        kind(
            "Consumer",
            "stop",
            source={"topic": "work"},
            action={"emit": {"topic": "nowhere-but-declared", "data": "${ event }"}},
            retry={"maxAttempts": 1},
            onFailure="block",
        ),
    )
    status = eventually(
        lambda: consumer_status(cp, namespace, "dl"),
        lambda s: s.get("lag") == 0 and s.get("processed") == 2,
        60,
        "the consumer to dead-letter the poison message and go on",
    )
    assert status["deadLettered"] == 1 and status["failed"] == 2
    assert "EntityNotFound" in status["lastError"]
    assert get(cp, namespace, "entity/log-ok")["status"]["state"]["items"] == [1, 3]
    (dead,) = messages(cp, namespace, "dl-dead")
    assert dead["data"]["message"]["id"] == "2" and "EntityNotFound" in dead["data"]["error"]
    assert dead["data"]["data"] == {"n": 2}

    blocked = eventually(
        lambda: consumer_status(cp, namespace, "stop"),
        lambda s: condition(s, "Stalled").get("reason") == "PoisonMessage",
        60,
        "the blocking consumer to stall",
    )
    assert blocked["offset"] == 0 and blocked["processed"] == 0
    assert "TopicNotFound" in condition(blocked, "Stalled")["message"]
    assert "offset 0" in condition(blocked, "Stalled")["message"]
    # Declaring the topic and touching the spec lets it go on.
    apply(cp, namespace, kind("Topic", "nowhere-but-declared"))
    apply(
        cp,
        namespace,
        kind(
            "Consumer",
            "stop",
            source={"topic": "work"},
            action={"emit": {"topic": "nowhere-but-declared", "data": "${ event }"}},
            retry={"maxAttempts": 2},
            onFailure="block",
        ),
    )
    eventually(
        lambda: consumer_status(cp, namespace, "stop"),
        lambda s: s.get("processed") == 3 and condition(s, "Stalled").get("status") == "False",
        60,
        "the unblocked consumer to go on",
    )
    assert [m["data"] for m in messages(cp, namespace, "nowhere-but-declared")] == [
        {"n": 1},
        {"n": 2},
        {"n": 3},
    ]


def test_a_consumer_behind_the_trimmed_head_says_offset_trimmed(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, kind("Topic", "short"))
    action = {"emit": {"topic": "short", "key": "x", "data": 1}}
    apply(
        cp,
        namespace,
        kind("Consumer", "late", source={"topic": "short"}, action=action, suspend=True),
    )
    eventually(
        lambda: consumer_status(cp, namespace, "late"),
        lambda s: condition(s, "Ready").get("reason") == "Suspended",
        60,
        "the suspended consumer to take its offset",
    )
    publish(cp, namespace, "short", [(str(n), "k", n) for n in range(5)])
    apply(cp, namespace, kind("Topic", "short", retention={"maxMessages": 2}))
    eventually(
        lambda: get(cp, namespace, "topic/short").get("status") or {},
        lambda s: s.get("messages") == 2 and s.get("trimmed") == 3,
        60,
        "the topic to be trimmed to 2 messages",
    )
    apply(cp, namespace, kind("Consumer", "late", source={"topic": "short"}, action=action))
    stalled = eventually(
        lambda: consumer_status(cp, namespace, "late"),
        lambda s: condition(s, "Stalled").get("reason") == "OffsetTrimmed",
        60,
        "the consumer to say it fell behind the trimmed head",
    )
    assert stalled["processed"] == 0


def test_run_changes_feed_a_consumer_and_emit_steps_publish_once(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(
        cp,
        namespace,
        kind(
            "Topic",
            "shipments",
            messageSchema={
                "type": "object",
                "properties": {"order": {"type": "string"}},
                "required": ["order"],
            },
        ),
    )
    apply(cp, namespace, kind("Topic", "done"))
    apply(
        cp,
        namespace,
        kind(
            "WorkflowTemplate",
            "ship",
            steps=[
                {
                    "name": "announce",
                    "emit": {
                        "topic": "shipments",
                        "key": "${ input.order }",
                        "data": {"order": "${ input.order }"},
                    },
                }
            ],
        ),
    )
    apply(
        cp,
        namespace,
        kind(
            "Consumer",
            "finished",
            source={"workflows": {"templateRef": {"name": "ship"}, "phases": ["Succeeded"]}},
            action={"emit": {"topic": "done", "data": "${ event.run.name }"}},
        ),
    )
    apply(
        cp,
        namespace,
        kind(
            "Consumer",
            "restart",
            source={"topic": "shipments"},
            filter="${ event.order == 'o1' }",
            action={"workflow": {"templateRef": {"name": "ship"}, "input": {"order": "o2"}}},
        ),
    )
    run = workflow("ship-o1", templateRef={"name": "ship"}, input={"order": "o1"})
    apply(cp, namespace, run)
    wait_phase(cp, namespace, "ship-o1", ("Succeeded",))
    found = eventually(
        lambda: messages(cp, namespace, "done"),
        lambda m: len(m) == 2,
        90,
        "both runs' completions to reach topic done",
    )
    started = [w for w in _workflows(cp, namespace) if w != "ship-o1"]
    assert len(started) == 1, started
    assert sorted(m["data"] for m in found) == sorted(["ship-o1", started[0]])
    shipped = messages(cp, namespace, "shipments")
    assert [(m["key"], m["data"]) for m in shipped] == [
        ("o1", {"order": "o1"}),
        ("o2", {"order": "o2"}),
    ]
    assert shipped[0]["id"].endswith("/announce")

    # Data that does not fit the topic's schema fails the step, not retried.
    bad = workflow(
        "bad-emit", steps=[{"name": "e", "emit": {"topic": "shipments", "data": {"x": 1}}}]
    )
    apply(cp, namespace, bad)
    failed = wait_phase(cp, namespace, "bad-emit", ("Failed",))
    assert "e.emit: data.order: required" in str(failed["status"])


def test_a_run_started_and_finished_in_one_transaction_reaches_a_parallel_consumer_twice(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    """A run of `set` steps commits its start and its end together: their two changes
    share an offset (and, keyed by the run, a lane); each is delivered."""
    cp = control_plane
    apply(cp, namespace, kind("Topic", "phases"))
    apply(
        cp,
        namespace,
        kind("WorkflowTemplate", "quick", steps=[{"name": "s", "set": {"done": True}}]),
    )
    for concurrency in (1, 3):
        apply(
            cp,
            namespace,
            kind(
                "Consumer",
                f"every-phase-{concurrency}",
                source={"workflows": {"templateRef": {"name": "quick"}}},
                concurrency=concurrency,
                action={
                    "emit": {
                        "topic": "phases",
                        "data": {"by": concurrency, "phase": "${ event.run.phase }"},
                    }
                },
            ),
        )
    apply(cp, namespace, workflow("quick-1", templateRef={"name": "quick"}))
    wait_phase(cp, namespace, "quick-1", ("Succeeded",))
    found = eventually(
        lambda: messages(cp, namespace, "phases"),
        lambda m: len(m) >= 4,
        90,
        "the start and the end of the run through both consumers",
    )
    for concurrency in (1, 3):
        phases = [m["data"]["phase"] for m in found if m["data"]["by"] == concurrency]
        assert phases == ["Running", "Succeeded"], (concurrency, found)


def _workflows(cp: ControlPlane, namespace: str) -> list[str]:
    out = cp.kubectl("get", "workflows", "-n", namespace, "-o", "name").stdout
    return [line.split("/", 1)[1] for line in out.split()]


def test_bad_definitions_are_refused_or_marked_invalid_with_the_field(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    two_actions = """
apiVersion: kurable.dev/v1alpha1
kind: Consumer
metadata: {name: two}
spec:
  source: {topic: t}
  action:
    emit: {topic: t}
    http: {url: http://example.com}
"""
    assert "exactly one of entity, workflow, http and emit" in refused(cp, namespace, two_actions)
    two_sources = two_actions.replace("source: {topic: t}", "source: {topic: t, entityType: x}")
    assert "exactly one of entityType, topic and workflows" in refused(cp, namespace, two_sources)
    bad_start = two_actions.replace("    http: {url: http://example.com}\n", "") + (
        "  startFrom: yesterday\n"
    )
    assert "startFrom must be beginning, latest or an RFC 3339 time" in refused(
        cp, namespace, bad_start
    )
    apply(cp, namespace, kind("Topic", "t"))
    apply(
        cp,
        namespace,
        kind(
            "Consumer",
            "bad-cel",
            source={"topic": "t"},
            filter="${ event.n > }",
            action={"emit": {"topic": "t", "data": "${ input.x }"}},
        ),
    )
    status = eventually(
        lambda: consumer_status(cp, namespace, "bad-cel"),
        lambda s: condition(s, "Ready").get("reason") == "Invalid",
        60,
        "the consumer to be marked Invalid",
    )
    assert "spec.filter" in status["message"] and "spec.action.emit.data" in status["message"]
    apply(cp, namespace, kind("Topic", "bad-schema", messageSchema={"type": "strnig"}))
    topic = eventually(
        lambda: get(cp, namespace, "topic/bad-schema").get("status") or {},
        lambda s: condition(s, "Ready").get("reason") == "Invalid",
        60,
        "the topic to be marked Invalid",
    )
    assert "spec.messageSchema" in topic["message"]
