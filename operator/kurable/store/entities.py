"""Entities in etcd: the key layout's reads, and the transactions that commit commands.

A command (kurable.executor.commands) reads the entity's snapshot and the command
id's dedup record at one revision (`read_command`), decides purely, and commits with
ONE transaction (`commit_command`, `commit_rejection`) that succeeds only if the
snapshot is still the one read (its mod revision: optimistic concurrency on the
entity version) and the command id is still unknown. The transaction appends the
events to the entity's log and to the per-type stream, puts the new snapshot and
writes the dedup record.

Rejections append no event and leave the state alone, but they are recorded under
the command id too, so that a retried rejected command gets the same rejection
even if the state has changed meanwhile (the answer to an id never changes).

Snapshots: the snapshot key always holds the current state, written in the same
transaction as the events, so reading an entity never replays its log. The
EntityType's `snapshotEvery` therefore has nothing to bound today; historical
snapshots (for reading an entity as of an old version) would be written every
`snapshotEvery` events when a reader for them exists. The log itself is kept whole
for consumers, audits and `kurable history`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aetcd

from kurable.engine.entities import CommandRejected, Event, Snapshot
from kurable.engine.sizes import canonical_json

from . import keys

__all__ = [
    "CommandRead",
    "EntityRef",
    "commit_command",
    "commit_rejection",
    "create_entity",
    "forget_entity",
    "load_events",
    "load_snapshot",
    "read_command",
]


@dataclass(frozen=True)
class EntityRef:
    """Which Entity (its uid included: a recreated Entity is a new one) and how it starts."""

    namespace: str
    name: str
    uid: str
    type: str
    """The EntityType's name."""
    initial_state: dict[str, Any] | None = None

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> EntityRef:
        """From an Entity object as the API server returns it."""
        meta, spec = obj["metadata"], obj.get("spec") or {}
        return cls(
            namespace=meta["namespace"],
            name=meta["name"],
            uid=meta["uid"],
            type=spec["type"],
            initial_state=spec.get("initialState"),
        )


@dataclass(frozen=True)
class CommandRead:
    """What one attempt of a command decides on, read at one etcd revision."""

    ref: EntityRef
    command_id: str
    snapshot: Snapshot | None
    """The entity's snapshot; None before its state was created."""
    snapshot_revision: int
    """The snapshot key's mod revision (0: absent); the commit requires it unchanged."""
    record: dict[str, Any] | None
    """The command id's dedup record (`{command, fingerprint, reply|rejected, version,
    at}`), if seen; records written before fingerprints existed have none."""


async def read_command(
    client: aetcd.Client, prefix: str, ref: EntityRef, command_id: str
) -> CommandRead:
    """Read the entity's snapshot and the command id's dedup record at one revision."""
    snapshot_key, dedup_key = _command_keys(prefix, ref, command_id)
    tx = client.transactions
    _, (snap_rows, dedup_rows) = await client.transaction(
        compare=[], success=[tx.get(snapshot_key), tx.get(dedup_key)], failure=[]
    )
    snapshot, revision = None, 0
    if snap_rows:
        value, meta = snap_rows[0]
        snapshot, revision = Snapshot.from_json(json.loads(value)), int(meta.mod_revision)
    record = json.loads(dedup_rows[0][0]) if dedup_rows else None
    return CommandRead(ref, command_id, snapshot, revision, record)


async def commit_rejection(
    client: aetcd.Client,
    prefix: str,
    read: CommandRead,
    command: str,
    fingerprint: str,
    rejection: CommandRejected,
    at: str,
) -> bool:
    """Record a rejection under the command id; False when `read` is outdated (the
    entity moved, or the id was recorded meanwhile): read and decide again."""
    record = {
        "command": command,
        "fingerprint": fingerprint,
        "rejected": rejection.to_json(),
        "at": at,
        "version": read.snapshot.version if read.snapshot is not None else 0,
    }
    _, dedup_key = _command_keys(prefix, read.ref, read.command_id)
    tx = client.transactions
    ok, _ = await client.transaction(
        compare=_unchanged(client, prefix, read),
        success=[tx.put(dedup_key, _dump(record))],
        failure=[],
    )
    return bool(ok)


async def commit_command(
    client: aetcd.Client,
    prefix: str,
    read: CommandRead,
    command: str,
    fingerprint: str,
    base: Snapshot,
    events: Sequence[Event],
    state: dict[str, Any],
    reply: Any,
    at: str,
) -> tuple[Snapshot, tuple[dict[str, Any], ...], int] | None:
    """Commit an accepted command decided on `base` (the snapshot read, or the initial
    one when `read` found none): append `events` to the entity's log and the per-type
    stream, put the snapshot (`state` after the events) and record the reply under the
    command id with the command's `fingerprint` (`engine.entities.command_fingerprint`),
    all in one transaction.

    Returns (the snapshot now current, the events as stored, the version after the
    command), or None when `read` is outdated: read and decide again.
    """
    ref = read.ref
    snapshot_key, dedup_key = _command_keys(prefix, ref, read.command_id)
    tx = client.transactions
    version = base.version
    stored_events = []
    puts = []
    for event in events:
        version += 1
        stored = {
            "type": event.type,
            "data": event.data,
            "commandId": read.command_id,
            "at": at,
            "version": version,
        }
        stored_events.append(stored)
        event_key = keys.entity_event(prefix, ref.namespace, ref.name, ref.uid, version)
        puts.append(tx.put(event_key.encode(), _dump(stored)))
        typed = {**stored, "id": f"{ref.uid}/{version}", "entity": _entity_json(ref)}
        puts.append(
            tx.put(
                keys.type_event(prefix, ref.namespace, ref.type, ref.uid, version).encode(),
                _dump(typed),
            )
        )
    snapshot = base
    if stored_events:
        last = {"type": stored_events[-1]["type"], "at": at, "version": version}
        snapshot = Snapshot(state, version, last)
    if stored_events or read.snapshot is None:
        puts.append(tx.put(snapshot_key, _dump(snapshot.to_json())))
    record = {
        "command": command,
        "fingerprint": fingerprint,
        "reply": reply,
        "version": version,
        "at": at,
    }
    puts.append(tx.put(dedup_key, _dump(record)))
    ok, _ = await client.transaction(
        compare=_unchanged(client, prefix, read), success=puts, failure=[]
    )
    return (snapshot, tuple(stored_events), version) if ok else None


def _unchanged(client: aetcd.Client, prefix: str, read: CommandRead) -> list[Any]:
    """The snapshot is still the one read, and the command id is still unknown."""
    snapshot_key, dedup_key = _command_keys(prefix, read.ref, read.command_id)
    tx = client.transactions
    same = (
        tx.mod(snapshot_key) == read.snapshot_revision
        if read.snapshot is not None
        else tx.create(snapshot_key) == 0
    )
    return [same, tx.create(dedup_key) == 0]


def _command_keys(prefix: str, ref: EntityRef, command_id: str) -> tuple[bytes, bytes]:
    return (
        keys.entity_snapshot(prefix, ref.namespace, ref.name, ref.uid).encode(),
        keys.entity_command(prefix, ref.namespace, ref.name, ref.uid, command_id).encode(),
    )


async def create_entity(
    client: aetcd.Client, prefix: str, entity: EntityRef, state: Mapping[str, Any]
) -> Snapshot:
    """Write the initial snapshot unless one exists; return the current snapshot."""
    key = keys.entity_snapshot(prefix, entity.namespace, entity.name, entity.uid).encode()
    tx = client.transactions
    initial = Snapshot(dict(state))
    ok, responses = await client.transaction(
        compare=[tx.create(key) == 0],
        success=[tx.put(key, _dump(initial.to_json()))],
        failure=[tx.get(key)],
    )
    if ok:
        return initial
    return Snapshot.from_json(json.loads(responses[0][0][0]))


async def load_snapshot(client: aetcd.Client, prefix: str, entity: EntityRef) -> Snapshot | None:
    """The entity's current snapshot, None before it was created."""
    found = await client.get(
        keys.entity_snapshot(prefix, entity.namespace, entity.name, entity.uid).encode()
    )
    return Snapshot.from_json(json.loads(found.value)) if found else None


async def load_events(client: aetcd.Client, prefix: str, entity: EntityRef) -> list[dict[str, Any]]:
    """The entity's whole event log, oldest first."""
    rows = await client.get_prefix(
        keys.entity_events(prefix, entity.namespace, entity.name, entity.uid).encode(),
        sort_order="ascend",
        sort_target="key",
    )
    return [json.loads(kv.value) for kv in rows]


async def forget_entity(client: aetcd.Client, prefix: str, entity: EntityRef) -> int:
    """Delete the entity's snapshot, log, dedup records and per-type events; return the count."""
    deleted = 0
    for key in (
        keys.entity(prefix, entity.namespace, entity.name, entity.uid),
        keys.type_entity_events(prefix, entity.namespace, entity.type, entity.uid),
    ):
        result = await client.delete_prefix(key.encode())
        deleted += int(getattr(result, "deleted", 0))
    return deleted


def _entity_json(ref: EntityRef) -> dict[str, str]:
    return {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid}


def _dump(value: Any) -> bytes:
    # The canonical encoding the size rule measures (kurable.engine.sizes): UTF-8, not
    # \uXXXX escapes, so a value's stored bytes are the bytes it was checked at.
    return canonical_json(value)
