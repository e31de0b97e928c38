"""Entity commands in etcd, exactly once: one transaction per accepted command.

`execute_command` reads the entity's snapshot and the command id's dedup record
at one revision, decides purely (`kurable.engine.entities.decide`), and commits
with ONE transaction that succeeds only if the snapshot is still the one read
(its mod revision: optimistic concurrency on the entity version) and the command
id is still unknown. The transaction appends the events to the entity's log and
to the per-type stream, puts the new snapshot and writes the dedup record. A lost
race re-reads and decides again (bounded, with jitter); a command id seen before
returns its original reply (or rejection) and changes nothing.

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

import asyncio
import contextlib
import json
import logging
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aetcd

from kurable.api.v1alpha1 import EntityTypeSpec
from kurable.engine import entities as engine
from kurable.engine.entities import CommandRejected, Snapshot
from kurable.engine.journal import now_rfc3339

from . import keys

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 50
"""Transactions tried per command before giving up with EntityBusy."""
MAX_BACKOFF_SECONDS = 0.2
MAX_COMMAND_ID_LENGTH = 512

__all__ = [
    "AskHandler",
    "CommandRejected",
    "CommandResult",
    "EntityBusy",
    "EntityRef",
    "HandlerUnavailable",
    "OnCommitted",
    "create_entity",
    "execute_command",
    "forget_entity",
    "load_events",
    "load_snapshot",
]


class EntityBusy(Exception):
    """Every attempt lost the race for the entity's version; the command was not applied."""


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
class CommandResult:
    """An accepted command: its reply, the entity version after it, whether it was a retry."""

    reply: Any
    version: int
    """The entity's version right after this command (for a duplicate: as first recorded)."""
    duplicate: bool
    """True when the command id had been seen: nothing changed, the reply is the original."""
    snapshot: Snapshot | None = None
    """The entity's snapshot after this command (for a duplicate: the current one)."""
    events: tuple[dict[str, Any], ...] = field(default_factory=tuple)
    """The events this call appended (empty for a duplicate)."""


OnCommitted = Callable[[EntityRef, CommandResult], Awaitable[None]]
AskHandler = Callable[[str, dict[str, Any], str], Awaitable[Any]]
"""Calls a command's HTTP handler: (url, {state, command, input, version}, command id)
-> its JSON answer. Raises HandlerUnavailable when it cannot tell (retry later)."""


class HandlerUnavailable(Exception):
    """The handler did not answer (connection, timeout, 5xx): nothing decided, retry."""


async def execute_command(
    client: aetcd.Client,
    prefix: str,
    entity: EntityRef | Mapping[str, Any],
    entity_type: EntityTypeSpec | Mapping[str, Any],
    command: str,
    input: Any,
    command_id: str,
    *,
    on_committed: OnCommitted | None = None,
    max_attempts: int = MAX_ATTEMPTS,
    ask: AskHandler | None = None,
) -> CommandResult:
    """Apply `command` to `entity` exactly once per `command_id`; raise CommandRejected if refused.

    `entity` is an EntityRef or the Entity object; `entity_type` the EntityTypeSpec or the
    EntityType's spec (or whole object). `on_committed` is awaited after a new command
    commits (e.g. to project status); its failure is logged, never raised: the command
    is committed either way.
    """
    ref = entity if isinstance(entity, EntityRef) else EntityRef.from_object(entity)
    spec = _spec(entity_type)
    _check_command_id(command_id)
    async with _lock(client, ref.uid):
        result = await _execute(
            client, prefix, ref, spec, command, input, command_id, max_attempts, ask
        )
    if on_committed is not None and not result.duplicate:
        try:
            await on_committed(ref, result)
        except Exception as e:
            log.warning(
                "command %s on %s/%s committed; notify failed: %s", command_id, *_at(ref), e
            )
    return result


async def _execute(
    client: aetcd.Client,
    prefix: str,
    ref: EntityRef,
    spec: EntityTypeSpec,
    command: str,
    input: Any,
    command_id: str,
    max_attempts: int,
    ask: AskHandler | None,
) -> CommandResult:
    snapshot_key = keys.entity_snapshot(prefix, ref.namespace, ref.name, ref.uid).encode()
    dedup_key = keys.entity_command(prefix, ref.namespace, ref.name, ref.uid, command_id).encode()
    tx = client.transactions
    for attempt in range(max_attempts):
        if attempt:
            await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF_SECONDS, 0.005 * 2**attempt)))
        _, (snap_rows, dedup_rows) = await client.transaction(
            compare=[], success=[tx.get(snapshot_key), tx.get(dedup_key)], failure=[]
        )
        if dedup_rows:
            record = json.loads(dedup_rows[0][0])
            if "rejected" in record:
                raise CommandRejected.from_json(record["rejected"])
            current = Snapshot.from_json(json.loads(snap_rows[0][0])) if snap_rows else None
            return CommandResult(record.get("reply"), int(record["version"]), True, current)
        if snap_rows:
            value, meta = snap_rows[0]
            snapshot = Snapshot.from_json(json.loads(value))
            unchanged = tx.mod(snapshot_key) == meta.mod_revision
            create_snapshot = False
        else:
            unchanged = tx.create(snapshot_key) == 0
            create_snapshot = True
        unknown_id = tx.create(dedup_key) == 0
        at = now_rfc3339()
        try:
            if create_snapshot:
                snapshot = Snapshot(engine.initial_state(spec, ref.initial_state))
            url = engine.handler_of(spec, command)
            if url is None:
                decision = engine.decide(spec, snapshot.state, command, input)
            else:
                # Asked again on every attempt (the state may have moved); the handler
                # gets the command id as Idempotency-Key, and only one answer commits.
                if ask is None:
                    raise CommandRejected("HandlerError", f"no way to call the handler {url}")
                checked = engine.checked_input(spec, command, input)
                payload = {
                    "state": snapshot.state,
                    "command": command,
                    "input": checked,
                    "version": snapshot.version,
                }
                answer = await ask(url, payload, command_id)
                decision = engine.decide_answered(spec, snapshot.state, command, answer)
        except CommandRejected as rejection:
            record = {"command": command, "rejected": rejection.to_json(), "at": at}
            record["version"] = snapshot.version if not create_snapshot else 0
            ok, _ = await client.transaction(
                compare=[unchanged, unknown_id],
                success=[tx.put(dedup_key, _dump(record))],
                failure=[],
            )
            if ok:
                raise
            continue
        version = snapshot.version
        events = []
        puts = []
        for event in decision.events:
            version += 1
            stored = {
                "type": event.type,
                "data": event.data,
                "commandId": command_id,
                "at": at,
                "version": version,
            }
            events.append(stored)
            event_key = keys.entity_event(prefix, *_at(ref), ref.uid, version)
            puts.append(tx.put(event_key.encode(), _dump(stored)))
            typed = {**stored, "id": f"{ref.uid}/{version}", "entity": _entity_json(ref)}
            puts.append(
                tx.put(
                    keys.type_event(prefix, ref.namespace, ref.type, ref.uid, version).encode(),
                    _dump(typed),
                )
            )
        if events:
            last = {"type": events[-1]["type"], "at": at, "version": version}
            snapshot = Snapshot(decision.state, version, last)
        if events or create_snapshot:
            puts.append(tx.put(snapshot_key, _dump(snapshot.to_json())))
        record = {"command": command, "reply": decision.reply, "version": version, "at": at}
        puts.append(tx.put(dedup_key, _dump(record)))
        ok, _ = await client.transaction(compare=[unchanged, unknown_id], success=puts, failure=[])
        if ok:
            return CommandResult(decision.reply, version, False, snapshot, tuple(events))
    raise EntityBusy(
        f"entity {ref.namespace}/{ref.name}: {max_attempts} attempts lost the race for its "
        f"version (too many concurrent writers); command {command_id!r} was not applied"
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


def _spec(entity_type: EntityTypeSpec | Mapping[str, Any]) -> EntityTypeSpec:
    if isinstance(entity_type, EntityTypeSpec):
        return entity_type
    spec = entity_type.get("spec", entity_type) if "kind" in entity_type else entity_type
    return EntityTypeSpec.model_validate(spec)


def _check_command_id(command_id: str) -> None:
    if not command_id or len(command_id) > MAX_COMMAND_ID_LENGTH or "\x00" in command_id:
        raise ValueError(
            f"a command id must be 1-{MAX_COMMAND_ID_LENGTH} characters without NUL, "
            f"got {command_id!r:.80}"
        )


def _at(ref: EntityRef) -> tuple[str, str]:
    return ref.namespace, ref.name


def _entity_json(ref: EntityRef) -> dict[str, str]:
    return {"namespace": ref.namespace, "name": ref.name, "uid": ref.uid}


def _dump(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


# Per etcd client (a client lives on one event loop, and so must asyncio locks):
# uid -> (lock, holders and waiters). An entry goes when its last user leaves.
_LOCKS: weakref.WeakKeyDictionary[aetcd.Client, dict[str, tuple[asyncio.Lock, int]]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.asynccontextmanager
async def _lock(client: aetcd.Client, uid: str) -> AsyncIterator[None]:
    """Serialize commands per entity within this process: a hot entity does not thrash."""
    locks = _LOCKS.setdefault(client, {})
    lock, users = locks.get(uid, (asyncio.Lock(), 0))
    locks[uid] = (lock, users + 1)
    try:
        async with lock:
            yield
    finally:
        lock, users = locks[uid]
        if users <= 1:
            del locks[uid]
        else:
            locks[uid] = (lock, users - 1)
