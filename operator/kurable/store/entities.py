"""Entities in etcd: the key layout's reads, and the transactions that commit commands.

A batch of commands to one entity (kurable.executor.commands; one command is a batch
of one) reads the entity's snapshot and the command ids' dedup records at one revision
(`read_commands`), decides each command purely on the state its predecessors left, and
commits them all with ONE transaction (`commit_commands`) that succeeds only if the
snapshot is still the one read (its mod revision: optimistic concurrency on the entity
version) and every command id is still unknown. The transaction appends the events to
the entity's log and to the per-type stream, puts the new snapshot and writes each
command's dedup record; it commits every command of the batch or none.

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
from dataclasses import dataclass, field, replace
from typing import Any

import aetcd

from kurable.engine.entities import CommandRejected, Event, Snapshot
from kurable.engine.sizes import canonical_json

from . import keys

__all__ = [
    "CommandsRead",
    "Committed",
    "Decided",
    "EntityRef",
    "commit_commands",
    "commit_operations",
    "create_entity",
    "forget_entity",
    "load_events",
    "load_events_page",
    "load_snapshot",
    "read_commands",
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
class CommandsRead:
    """What one attempt of a batch of commands to one entity decides on, read at one
    etcd revision."""

    ref: EntityRef
    command_ids: tuple[str, ...]
    snapshot: Snapshot | None
    """The entity's snapshot; None before its state was created."""
    snapshot_revision: int
    """The snapshot key's mod revision (0: absent); the commit requires it unchanged."""
    records: Mapping[str, dict[str, Any]]
    """Command id -> its dedup record (`{command, fingerprint, reply|rejected, version,
    at}`), for the ids seen before; records written before fingerprints existed have
    no fingerprint."""
    offsets: Mapping[str, int] = field(default_factory=dict)
    """Command id -> the etcd revision that recorded it (its events' stream offset)."""


@dataclass(frozen=True)
class Decided:
    """One command's outcome, decided on the state its predecessors in the batch left:
    accepted (`events`, `state` after them, `reply`) or `rejected`."""

    command_id: str
    command: str
    fingerprint: str
    """`engine.entities.command_fingerprint(command, input)`."""
    events: Sequence[Event] = ()
    state: dict[str, Any] | None = None
    """The state after `events`; None for a rejection."""
    reply: Any = None
    rejected: CommandRejected | None = None


@dataclass(frozen=True)
class Committed:
    """A recorded command: the entity's snapshot right after it (None: a rejection before
    the entity had state), the events as stored, the entity's version after it."""

    snapshot: Snapshot | None
    events: tuple[dict[str, Any], ...]
    version: int
    offset: int = 0
    """The etcd revision of the commit: the offset of its events in the per-type stream
    (a query given it as `minOffset` sees this command's effect)."""


async def read_commands(
    client: aetcd.Client, prefix: str, ref: EntityRef, command_ids: Sequence[str]
) -> CommandsRead:
    """Read the entity's snapshot and the dedup records of `command_ids` at one revision."""
    snapshot_key = _snapshot_key(prefix, ref)
    tx = client.transactions
    _, (snap_rows, *dedup_rows) = await client.transaction(
        compare=[],
        success=[tx.get(snapshot_key)]
        + [tx.get(_dedup_key(prefix, ref, command_id)) for command_id in command_ids],
        failure=[],
    )
    snapshot, revision = None, 0
    if snap_rows:
        value, meta = snap_rows[0]
        snapshot, revision = Snapshot.from_json(json.loads(value)), int(meta.mod_revision)
    records = {
        command_id: json.loads(rows[0][0])
        for command_id, rows in zip(command_ids, dedup_rows, strict=True)
        if rows
    }
    offsets = {
        command_id: int(rows[0][1].mod_revision)
        for command_id, rows in zip(command_ids, dedup_rows, strict=True)
        if rows
    }
    return CommandsRead(ref, tuple(command_ids), snapshot, revision, records, offsets)


def commit_operations(decided: Sequence[Decided]) -> int:
    """The writes `commit_commands` puts in its transaction for `decided` (etcd caps a
    transaction's operations, `--max-txn-ops`, 128 by default): two per event (the
    entity's log and the type's stream), one dedup record per command, one snapshot."""
    return sum(2 * len(d.events) + 1 for d in decided) + 1


async def commit_commands(
    client: aetcd.Client,
    prefix: str,
    read: CommandsRead,
    decided: Sequence[Decided],
    at: str,
) -> list[Committed] | None:
    """Commit `decided` (ids of `read.command_ids` not seen before, in the order they
    were decided, each on the state the previous left) in ONE transaction: append each
    accepted command's events to the entity's log and the per-type stream, put the
    snapshot after the last one, and record each command's reply (or rejection) under
    its id with its fingerprint. The transaction succeeds only if the snapshot is still
    the one read and none of the ids has been recorded meanwhile.

    Returns one Committed per element of `decided`, in order, or None when `read` is
    outdated: read and decide again.
    """
    ref = read.ref
    tx = client.transactions
    current = read.snapshot
    version = current.version if current is not None else 0
    results: list[Committed] = []
    puts = []
    appended = False
    for one in decided:
        record: dict[str, Any] = {"command": one.command, "fingerprint": one.fingerprint}
        stored_events: list[dict[str, Any]] = []
        if one.rejected is not None:
            record["rejected"] = one.rejected.to_json()
        else:
            for event in one.events:
                version += 1
                stored = {
                    "type": event.type,
                    "data": event.data,
                    "commandId": one.command_id,
                    "at": at,
                    "version": version,
                }
                stored_events.append(stored)
                event_key = keys.entity_event(prefix, ref.namespace, ref.name, ref.uid, version)
                puts.append(tx.put(event_key.encode(), _dump(stored)))
                typed = {
                    **stored,
                    "id": f"{ref.uid}/{version}",
                    "entity": _entity_json(ref),
                    "state": one.state or {},
                }
                puts.append(
                    tx.put(
                        keys.type_event(prefix, ref.namespace, ref.type, ref.uid, version).encode(),
                        _dump(typed),
                    )
                )
            if stored_events:
                last = {"type": stored_events[-1]["type"], "at": at, "version": version}
                current = Snapshot(dict(one.state or {}), version, last)
                appended = True
            elif current is None:
                current = Snapshot(dict(one.state or {}))
            record["reply"] = one.reply
        record["version"] = version
        record["at"] = at
        puts.append(tx.put(_dedup_key(prefix, ref, one.command_id), _dump(record)))
        results.append(Committed(current, tuple(stored_events), version))
    if current is not None and (appended or read.snapshot is None):
        puts.append(tx.put(_snapshot_key(prefix, ref), _dump(_snapshot_json(current, ref))))
    ok, responses = await client.transaction(
        compare=_unchanged(client, prefix, read, [d.command_id for d in decided]),
        success=puts,
        failure=[],
    )
    if not ok:
        return None
    offset = int(responses[0].response_put.header.revision) if responses else 0
    return [replace(one, offset=offset) for one in results]


def _unchanged(
    client: aetcd.Client, prefix: str, read: CommandsRead, command_ids: Sequence[str]
) -> list[Any]:
    """The snapshot is still the one read, and each command id is still unknown."""
    snapshot_key = _snapshot_key(prefix, read.ref)
    tx = client.transactions
    same = (
        tx.mod(snapshot_key) == read.snapshot_revision
        if read.snapshot is not None
        else tx.create(snapshot_key) == 0
    )
    return [same] + [
        tx.create(_dedup_key(prefix, read.ref, command_id)) == 0 for command_id in command_ids
    ]


def _snapshot_key(prefix: str, ref: EntityRef) -> bytes:
    return keys.entity_snapshot(prefix, ref.namespace, ref.name, ref.uid).encode()


def _dedup_key(prefix: str, ref: EntityRef, command_id: str) -> bytes:
    return keys.entity_command(prefix, ref.namespace, ref.name, ref.uid, command_id).encode()


async def create_entity(
    client: aetcd.Client, prefix: str, entity: EntityRef, state: Mapping[str, Any]
) -> Snapshot:
    """Write the initial snapshot unless one exists; return the current snapshot."""
    key = keys.entity_snapshot(prefix, entity.namespace, entity.name, entity.uid).encode()
    tx = client.transactions
    initial = Snapshot(dict(state))
    ok, responses = await client.transaction(
        compare=[tx.create(key) == 0],
        success=[tx.put(key, _dump(_snapshot_json(initial, entity)))],
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


async def load_events_page(
    client: aetcd.Client, prefix: str, entity: EntityRef, after: int, limit: int
) -> list[dict[str, Any]]:
    """At most `limit` events of the entity's log with a version above `after`, oldest first.

    The log's keys are listed first (aetcd's range read takes no limit), then only the
    page's events are read."""
    events = keys.entity_events(prefix, entity.namespace, entity.name, entity.uid)
    start = keys.entity_event(prefix, entity.namespace, entity.name, entity.uid, after + 1)
    listing = await client.get_prefix(
        events.encode(), sort_order="ascend", sort_target="key", keys_only=True
    )
    page = [kv.key for kv in listing if kv.key >= start.encode()][:limit]
    if not page:
        return []
    rows = await client.get_range(page[0], page[-1] + b"\0", sort_order="ascend")
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


def _snapshot_json(snapshot: Snapshot, ref: EntityRef) -> dict[str, Any]:
    """A snapshot as stored: with its EntityType's name, so that a View can be rebuilt
    from the snapshots of one type (kurable.store.views)."""
    return {**snapshot.to_json(), "type": ref.type}


def _entity_json(ref: EntityRef) -> dict[str, str]:
    return {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid}


def _dump(value: Any) -> bytes:
    # The canonical encoding the size rule measures (kurable.engine.sizes): UTF-8, not
    # \uXXXX escapes, so a value's stored bytes are the bytes it was checked at.
    return canonical_json(value)
