"""etcd reads for Views: the snapshots of one EntityType's entities, to (re)build a View's
rows without the whole per-type stream (kurable.executor.views)."""

from __future__ import annotations

import json
from typing import Any

import aetcd
from aetcd import rpc

from . import keys
from .streams import _range

PAGE = 1000
"""Keys per range request (a response must stay under the client's 4 MiB)."""


async def entity_snapshots(
    client: aetcd.Client, prefix: str, namespace: str, entity_type: str
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """The snapshots of the entities of `entity_type` in `namespace`, read at one etcd
    revision, each as a stream item of the type's stream would carry it
    (`{entity: {namespace, name, uid}, state, version}`), keyed by uid; and that revision
    (the type's stream continues after it). Snapshots written before they carried their
    type are not found: such entities get a row from their next event."""
    start = entities_of(prefix, namespace)
    end = keys.range_end(start).encode()
    key, revision = start.encode(), 0
    found: list[tuple[str, dict[str, Any]]] = []
    while True:
        request = rpc.RangeRequest(key=key, range_end=end, limit=PAGE, revision=revision)
        response = await _range(client, request)
        revision = revision or int(response.header.revision)
        for kv in response.kvs:
            parsed = snapshot_source(prefix, namespace, entity_type, kv.key.decode(), kv.value)
            if parsed is not None:
                found.append(parsed)
        if not response.more or not response.kvs:
            return found, revision
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
