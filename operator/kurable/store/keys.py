"""The layout of Kurable's keys in etcd, in one place.

Everything lives under one prefix (default `/kurable/`), separate from the API
server's own keys (`/registry/`):

    <prefix>workflows/<uid>/journal/<seq:010d>   one journal record (JSON), or a reference
                                                 {"chunked": {seq, token, count, bytes}}
    <prefix>workflows/<uid>/chunks/<seq:010d>/<token>/<n:06d>
                                                 piece n of a large record (raw bytes)
    <prefix>workflows/<uid>/owner                the id of the executor holding the run
                                                 (a plain key: it outlives a lost lease)
    <prefix>workflows/<uid>/signal-keys/<sha256> an Idempotency-Key of a signal the endpoint
                                                 sent: {signal, digest} (a resend is a no-op)
    <prefix>executors/<slot>                     a live executor (on its lease): its id,
                                                 `<slot>/<incarnation>`; the members that
                                                 share the runs (kurable.executor.shards)

    <prefix>entities/<ns>/<name>/<uid>/snapshot              {state, version, lastEvent}
    <prefix>entities/<ns>/<name>/<uid>/events/<version:012d> {type, data, commandId, at, version}
    <prefix>entities/<ns>/<name>/<uid>/commands/<commandId>  the original reply or rejection
    <prefix>types/<ns>/<type>/events/<uid>/<version:012d>    the event + its id and entity, per type

    <prefix>runs/<ns>/<template>/changes/<uid>/<seq:010d>    a run's phase change, per template
                                                 (`-` for an inline definition): {run, input,
                                                 output, vars, error, seq, at}

    <prefix>topics/<ns>/<topic>/messages/<sha256(id)>        one message: {id, key, type, source,
                                                 time, data} (its offset: its mod revision)
    <prefix>topics/<ns>/<topic>/trimmed                      {offset, count}: the newest offset
                                                 and how many messages retention deleted
    <prefix>consumers/<ns>/<uid>/offset                      {offset, startFrom, processed, failed,
                                                 deadLettered, lastError}: every message up to
                                                 offset is handled
    <prefix>consumers/<ns>/<uid>/keys/<sha256(key)>          {offset, ...counts}: a key's progress
                                                 past the offset (concurrency > 1), folded
                                                 into the offset when the batch is done

A commit compares both the run's owner key and the committer's executor key
(kurable.store.journal.Fence): the hold is per executor, so a lease granted again
after it was lost makes every hold live again with one put. A previous version kept
owner keys on the executor's lease and its executor keys at `executors/<id>`: such
keys are respected while they live and expire with their lease.

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

A topic message's key is the digest of its id, so publishing an id again (a retried
step, a resent request) finds its slot taken and writes nothing. Consumers keep their
offset under their Consumer's uid (a recreated Consumer starts afresh).

The per-template stream of run changes is written the same way: in the transaction of
the journal record that changes the run's phase (kurable.engine.run_changes), read in
mod-revision order (kurable.store.streams), deleted with the run's journal.
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
    """Who executes the run: an executor id; held while that executor's key holds it."""
    return f"{workflow(prefix, uid)}owner"


def signal_key(prefix: str, uid: str, key_digest: str) -> str:
    """The record of one signal Idempotency-Key (by its SHA-256: keys are caller text)."""
    return f"{workflow(prefix, uid)}signal-keys/{key_digest}"


def executors(prefix: str) -> str:
    """The prefix of the live executors' keys (the members sharing the runs)."""
    return f"{prefix}executors/"


def executor(prefix: str, slot: str) -> str:
    """A live executor, kept while its lease is renewed; value: its id."""
    return f"{executors(prefix)}{slot}"


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


def template_changes(prefix: str, namespace: str, template: str) -> str:
    """A topic message's key is the digest of its id, so publishing an id again (a retried
    step, a resent request) finds its slot taken and writes nothing. Consumers keep their
    offset under their Consumer's uid (a recreated Consumer starts afresh).

    The per-template stream of run changes (`template` is `-` for inline runs)."""
    return f"{prefix}runs/{namespace}/{template}/changes/"


def run_changes(prefix: str, namespace: str, template: str, uid: str) -> str:
    """One run's part of its template's stream (deleted with the run's journal)."""
    return f"{template_changes(prefix, namespace, template)}{uid}/"


def run_change(prefix: str, namespace: str, template: str, uid: str, seq: int) -> str:
    """The change made by journal record `seq` of run `uid`."""
    return f"{run_changes(prefix, namespace, template, uid)}{seq:010d}"


def topic(prefix: str, namespace: str, topic: str) -> str:
    """Everything of one Topic (delete this prefix to forget it)."""
    return f"{prefix}topics/{namespace}/{topic}/"


def topic_messages(prefix: str, namespace: str, topic_name: str) -> str:
    """The stream of a Topic's messages (read it in mod-revision order)."""
    return f"{topic(prefix, namespace, topic_name)}messages/"


def topic_message(prefix: str, namespace: str, topic_name: str, id_digest: str) -> str:
    """One message, by the SHA-256 of its id (ids are caller text)."""
    return f"{topic_messages(prefix, namespace, topic_name)}{id_digest}"


def topic_trimmed(prefix: str, namespace: str, topic_name: str) -> str:
    """How far retention has trimmed the topic: {offset, count}."""
    return f"{topic(prefix, namespace, topic_name)}trimmed"


def consumer(prefix: str, namespace: str, uid: str) -> str:
    """Everything of one Consumer (delete this prefix to forget it)."""
    return f"{prefix}consumers/{namespace}/{uid}/"


def consumer_offset(prefix: str, namespace: str, uid: str) -> str:
    """A Consumer's offset and counts."""
    return f"{consumer(prefix, namespace, uid)}offset"


def consumer_keys(prefix: str, namespace: str, uid: str) -> str:
    """The prefix of a Consumer's per-key progress records."""
    return f"{consumer(prefix, namespace, uid)}keys/"


def consumer_key(prefix: str, namespace: str, uid: str, key_digest: str) -> str:
    """One key's progress past the offset, by the SHA-256 of the key."""
    return f"{consumer_keys(prefix, namespace, uid)}{key_digest}"


def range_end(prefix: str) -> str:
    """The end of the key range that starts with `prefix` (etcd's prefix convention)."""
    raw = prefix.encode()
    return (raw[:-1] + bytes([raw[-1] + 1])).decode()
