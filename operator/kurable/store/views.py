"""etcd reads for Views: the snapshots of one EntityType's entities, to (re)build a View's
rows without the whole per-type stream (kurable.executor.views)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import aetcd
from aetcd import rpc

from . import keys
from .etcd import raw_range

PAGE = 1000
"""Keys per range request (a response must stay under the client's 4 MiB)."""


@dataclass(frozen=True)
class Snapshots:
    """What `entity_snapshots` read at one etcd `revision`: the snapshots of one type, as
    `(uid, stream-item-shaped value)`, and the uids of every entity of the namespace that
    has a snapshot (of any type, or written before snapshots carried their type)."""

    found: list[tuple[str, dict[str, Any]]]
    present: frozenset[str]
    revision: int


async def entity_snapshots(
    client: aetcd.Client, prefix: str, namespace: str, entity_type: str
) -> Snapshots:
    """The snapshots of the entities of `entity_type` in `namespace`, read at one etcd
    revision, each as a stream item of the type's stream would carry it
    (`{entity: {namespace, name, uid}, state, version}`), keyed by uid; the uids of every
    entity that still has a snapshot there; and that revision (the type's stream
    continues after it). Snapshots written before they carried their type are not found:
    such entities get a row from their next event, and are present."""
    start = entities_of(prefix, namespace)
    end = keys.range_end(start).encode()
    key, revision = start.encode(), 0
    found: list[tuple[str, dict[str, Any]]] = []
    present: set[str] = set()
    while True:
        request = rpc.RangeRequest(key=key, range_end=end, limit=PAGE, revision=revision)
        response = await raw_range(client, request)
        revision = revision or int(response.header.revision)
        for kv in response.kvs:
            name = kv.key.decode()
            any_type = snapshot_source(prefix, namespace, entity_type, name, None)
            if any_type is None:
                continue
            present.add(any_type[0])
            parsed = snapshot_source(prefix, namespace, entity_type, name, kv.value)
            if parsed is not None:
                found.append(parsed)
        if not response.more or not response.kvs:
            return Snapshots(found, frozenset(present), revision)
        key = response.kvs[-1].key + b"\0"


def entities_of(prefix: str, namespace: str) -> str:
    """The prefix of every Entity's keys in `namespace` (snapshots, logs, dedup records)."""
    return f"{prefix}entities/{namespace}/"


def snapshot_source(
    prefix: str, namespace: str, entity_type: str, key: str, raw: bytes | None
) -> tuple[str, dict[str, Any]] | None:
    """(uid, stream-item-shaped value) when `key` is the snapshot of an entity of
    `entity_type` (with `raw` None: any entity's snapshot, value `{}`), else None."""
    parts = key[len(entities_of(prefix, namespace)) :].split("/")
    if len(parts) != 3 or parts[2] != "snapshot":
        return None
    name, uid = parts[0], parts[1]
    if raw is None:
        return uid, {}
    snapshot = json.loads(raw)
    if snapshot.get("type") != entity_type:
        return None
    return uid, {
        "entity": {"namespace": namespace, "name": name, "uid": uid},
        "state": snapshot.get("state") or {},
        "version": int(snapshot.get("version", 0)),
    }
