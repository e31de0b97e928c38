"""The layout of Kurable's keys in etcd, in one place.

Everything lives under one prefix (default `/kurable/`), separate from the API
server's own keys (`/registry/`):

    <prefix>workflows/<uid>/journal/<seq:010d>   one journal record (JSON), or a reference
                                                 {"chunked": {seq, token, count, bytes}}
    <prefix>workflows/<uid>/chunks/<seq:010d>/<token>/<n:06d>
                                                 piece n of a large record (raw bytes)
    <prefix>workflows/<uid>/owner                the executor holding the run (fencing)
    <prefix>executors/<id>                       a live operator instance (on its lease)

    <prefix>entities/<ns>/<name>/<uid>/snapshot              {state, version, lastEvent}
    <prefix>entities/<ns>/<name>/<uid>/events/<version:012d> {type, data, commandId, at, version}
    <prefix>entities/<ns>/<name>/<uid>/commands/<commandId>  the original reply or rejection
    <prefix>types/<ns>/<type>/events/<uid>/<version:012d>    the event + its id and entity, per type

A journal record whose JSON exceeds 256 KiB (`engine.sizes.CHUNK_BYTES`) is stored in
chunks of at most that size, each put by its own request before the commit transaction;
the transaction then puts the small reference in the record's slot, and reading
reassembles the chunks. `token` is unique per commit attempt, so chunks of an attempt
that lost its slot (or crashed before committing) are never referenced: harmless, and
deleted with the run (`workflow(prefix, uid)`). Journals without chunks read as before.

An entity's keys include the Entity object's uid, so that a deleted and recreated
Entity of the same name starts afresh. The per-type stream is written in the same
transaction as the entity's own log; its consumers read it in etcd revision order
(the mod revision of an event is its offset), not in key order.
"""

from __future__ import annotations

DEFAULT_PREFIX = "/kurable/"


def normalize_prefix(prefix: str) -> str:
    """`/kurable` and `kurable/` both mean `/kurable/`."""
    return "/" + prefix.strip("/") + "/" if prefix.strip("/") else "/"


def workflow(prefix: str, uid: str) -> str:
    """Everything of one run (delete this prefix to forget the run)."""
    return f"{prefix}workflows/{uid}/"


def journal(prefix: str, uid: str) -> str:
    """The prefix of a run's journal records."""
    return f"{workflow(prefix, uid)}journal/"


def journal_record(prefix: str, uid: str, seq: int) -> str:
    """One record; zero-padded so that key order is journal order."""
    return f"{journal(prefix, uid)}{seq:010d}"


def journal_chunks(prefix: str, uid: str, seq: int, token: str) -> str:
    """The prefix of the chunks of record `seq` written by one commit attempt (`token`)."""
    return f"{workflow(prefix, uid)}chunks/{seq:010d}/{token}/"


def journal_chunk(prefix: str, uid: str, seq: int, token: str, index: int) -> str:
    """Piece `index` of a chunked record; zero-padded so that key order is piece order."""
    return f"{journal_chunks(prefix, uid, seq, token)}{index:06d}"


def owner(prefix: str, uid: str) -> str:
    """Who executes the run; attached to the executor's lease, so it dies with it."""
    return f"{workflow(prefix, uid)}owner"


def executor(prefix: str, executor_id: str) -> str:
    """A live executor, kept while its lease is renewed."""
    return f"{prefix}executors/{executor_id}"


def entity(prefix: str, namespace: str, name: str, uid: str) -> str:
    """Everything of one Entity (delete this prefix to forget it)."""
    return f"{prefix}entities/{namespace}/{name}/{uid}/"


def entity_snapshot(prefix: str, namespace: str, name: str, uid: str) -> str:
    """The current state, version and last event; written by every accepted command."""
    return f"{entity(prefix, namespace, name, uid)}snapshot"


def entity_events(prefix: str, namespace: str, name: str, uid: str) -> str:
    """The prefix of an Entity's event log."""
    return f"{entity(prefix, namespace, name, uid)}events/"


def entity_event(prefix: str, namespace: str, name: str, uid: str, version: int) -> str:
    """The event that made `version`; zero-padded so that key order is log order."""
    return f"{entity_events(prefix, namespace, name, uid)}{version:012d}"


def entity_command(prefix: str, namespace: str, name: str, uid: str, command_id: str) -> str:
    """The dedup record of one command id: its original reply or rejection."""
    return f"{entity(prefix, namespace, name, uid)}commands/{command_id}"


def type_events(prefix: str, namespace: str, entity_type: str) -> str:
    """The per-type event stream of an EntityType (read it in mod-revision order)."""
    return f"{prefix}types/{namespace}/{entity_type}/events/"


def type_entity_events(prefix: str, namespace: str, entity_type: str, uid: str) -> str:
    """One Entity's part of the per-type stream (deleted with the Entity)."""
    return f"{type_events(prefix, namespace, entity_type)}{uid}/"


def type_event(prefix: str, namespace: str, entity_type: str, uid: str, version: int) -> str:
    """One event in the per-type stream."""
    return f"{type_entity_events(prefix, namespace, entity_type, uid)}{version:012d}"


def range_end(prefix: str) -> str:
    """The end of the key range that starts with `prefix` (etcd's prefix convention)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()
