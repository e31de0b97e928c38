"""Topics in etcd: publishing a message exactly once per id, and trimming by retention.

A message is stored at `keys.topic_message(..., sha256(id))`, so publishing an id again
(a step executed again after a crash, a resent request, a consumer's action redelivered)
finds the slot taken and writes nothing: the publisher is told the original's offset.
The offset of a message is the mod revision of its put (kurable.store.streams reads it).
Retention deletes the oldest messages and records, in the same transaction, how far it
went (`keys.topic_trimmed`), so that a consumer behind it can tell it missed messages.
A message id trimmed away may be published again (it is a new message then).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aetcd

from kurable.engine.journal import parse_time

from . import keys, streams

TRIM_BATCH = 100
"""Messages deleted per transaction when trimming (etcd's --max-txn-ops is 128)."""


class MessageConflict(Exception):
    """The id was published before with another key or data."""


@dataclass(frozen=True)
class Published:
    """Where a message went."""

    id: str
    offset: int
    """The message's offset (for a duplicate: the original's)."""
    duplicate: bool
    """The id had been published: nothing was written."""


def digest(text: str) -> str:
    """The SHA-256 (hex) of caller text used in a key."""
    return hashlib.sha256(text.encode()).hexdigest()


def message(id: str, key: str, data: Any, *, type: str, source: str, time: str) -> dict[str, Any]:
    """A message as stored (a CloudEvents-like envelope around `data`)."""
    return {"id": id, "key": key, "type": type, "source": source, "time": time, "data": data}


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


async def publish(
    client: aetcd.Client, prefix: str, namespace: str, topic: str, stored: dict[str, Any]
) -> Published:
    """Append `stored` (see `message`) to the topic unless its id was published; raises
    MessageConflict when that id holds another key or data."""
    key = keys.topic_message(prefix, namespace, topic, digest(str(stored["id"]))).encode()
    tx = client.transactions
    ok, responses = await client.transaction(
        compare=[tx.create(key) == 0],
        success=[tx.put(key, _dump(stored))],
        failure=[tx.get(key)],
    )
    if ok:
        return Published(stored["id"], int(responses[0].response_put.header.revision), False)
    (value, existing), *_ = responses[0]
    before = json.loads(value)
    if before.get("key") != stored.get("key") or before.get("data") != stored.get("data"):
        raise MessageConflict(
            f"message id {stored['id']!r} was published to topic {topic!r} with another "
            "key or data: use a new id (Idempotency-Key) for a new message"
        )
    return Published(stored["id"], int(existing.mod_revision), True)


@dataclass(frozen=True)
class TopicState:
    """A topic's numbers, for status and for consumers."""

    head: int
    """The newest offset (0: empty)."""
    first: int
    """The oldest offset kept (0: empty)."""
    messages: int
    trimmed_offset: int
    """Messages at or below this offset were deleted by retention (0: none)."""
    trimmed: int
    """How many messages retention deleted."""


async def trimmed(client: aetcd.Client, prefix: str, namespace: str, topic: str) -> tuple[int, int]:
    """(offset, count): the newest offset retention deleted and how many it deleted."""
    got = await client.get(keys.topic_trimmed(prefix, namespace, topic).encode())
    if got is None:
        return 0, 0
    mark = json.loads(got.value)
    return int(mark.get("offset", 0)), int(mark.get("count", 0))


async def state(client: aetcd.Client, prefix: str, namespace: str, topic: str) -> TopicState:
    """The topic's head, oldest offset, size and trimming so far."""
    stream = keys.topic_messages(prefix, namespace, topic)
    offset, count = await trimmed(client, prefix, namespace, topic)
    return TopicState(
        head=await streams.head(client, stream),
        first=await streams.first(client, stream),
        messages=await streams.lag(client, stream, 0),
        trimmed_offset=offset,
        trimmed=count,
    )


async def trim(
    client: aetcd.Client,
    prefix: str,
    namespace: str,
    topic: str,
    *,
    max_age_seconds: float | None,
    max_messages: int | None,
    now: datetime,
) -> int:
    """Delete the messages retention no longer keeps: older than `max_age_seconds` (by
    their `time`) or beyond the newest `max_messages`; return how many went. Each batch
    of deletions moves the trimmed mark in the same transaction."""
    stream = keys.topic_messages(prefix, namespace, topic)
    excess = 0
    if max_messages is not None:
        excess = max(0, await streams.lag(client, stream, 0) - max_messages)
    deleted = 0
    after = 0
    while True:
        page = await streams.read(client, stream, after, TRIM_BATCH)
        doomed: list[streams.StreamItem] = []
        for item in page:
            old = max_age_seconds is not None and _age(item, now) > max_age_seconds
            if not old and excess <= len(doomed):
                break
            doomed.append(item)
        if not doomed:
            return deleted
        await _delete(client, prefix, namespace, topic, doomed)
        deleted += len(doomed)
        excess = max(0, excess - len(doomed))
        after = doomed[-1].offset
        if len(doomed) < len(page):
            return deleted


def _age(item: streams.StreamItem, now: datetime) -> float:
    try:
        return (now - parse_time(str((item.value or {}).get("time")))).total_seconds()
    except (TypeError, ValueError):
        return 0.0


async def _delete(
    client: aetcd.Client,
    prefix: str,
    namespace: str,
    topic: str,
    doomed: list[streams.StreamItem],
) -> None:
    mark_key = keys.topic_trimmed(prefix, namespace, topic).encode()
    tx = client.transactions
    while True:
        current = await client.get(mark_key)
        mark = json.loads(current.value) if current is not None else {"offset": 0, "count": 0}
        mark = {
            "offset": max(int(mark["offset"]), doomed[-1].offset),
            "count": int(mark["count"]) + len(doomed),
        }
        guard = tx.mod(mark_key) == current.mod_revision if current else tx.create(mark_key) == 0
        # A message already gone (another trimmer) must not be counted: compare each.
        ok, _ = await client.transaction(
            compare=[guard, *(tx.mod(i.key.encode()) == i.offset for i in doomed)],
            success=[tx.put(mark_key, _dump(mark)), *(tx.delete(i.key.encode()) for i in doomed)],
            failure=[],
        )
        if ok:
            return
        present = []
        for item in doomed:
            got = await client.get(item.key.encode())
            if got is not None and int(got.mod_revision) == item.offset:
                present.append(item)
        if not present:
            return
        doomed = present


async def forget(client: aetcd.Client, prefix: str, namespace: str, topic: str) -> int:
    """Delete every message of a topic and its trimmed mark; return how many keys went."""
    result = await client.delete_prefix(keys.topic(prefix, namespace, topic).encode())
    return int(getattr(result, "deleted", 0))
