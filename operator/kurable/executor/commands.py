"""Entity commands, exactly once: decide, call the handler, commit, retry; then status.

`execute_command` puts the command in the entity's queue in this process (one per
entity and etcd client, `kurable.executor.entity_queue`; commands wait there in arrival
order, at most MAX_QUEUED, and the queue is forgotten when it runs empty). The queue's
task takes the oldest commands (up to MAX_BATCH_COMMANDS), reads the entity's snapshot
and their dedup records at one revision (`store.entities.read_commands`), decides each
purely on the state the previous one left (`kurable.engine.entities.decide`, or the
command's HTTP handler's answer through `decide_answered`), and commits them all with
ONE transaction (`store.entities.commit_commands`) that succeeds only if the snapshot is
still the one read and every command id is still unknown. So commands of one process to
one entity never race each other; a race lost to another process reads and decides
again (bounded, with jitter). A command id seen before returns its original reply (or
rejection) and changes nothing, provided it is the same command with the same input (the
record keeps a fingerprint of both): an id reused for anything else raises
CommandConflict.

Commands to an EntityType whose status says `Invalid` are refused (`TypeInvalid`,
with the type's status message) before anything is read: its definition cannot be
trusted to decide.

After a commit, the new state is projected into the Entity's status
(`project_entity_status`; through `status_projector`, one entity's concurrent
projections coalesce); a sender that dies before that leaves status behind, and the
operator's periodic check puts it right.

Every sender uses this path: a workflow's `entity` step, the Python client, the CLI.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aetcd
import aiohttp
from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import ENTITY, GROUP, VERSION, EntityTypeSpec
from kurable.engine import entities as engine
from kurable.engine import sizes
from kurable.engine.entities import (
    CommandConflict,
    CommandRejected,
    Snapshot,
    project_status,
    status_merge_patch,
)
from kurable.engine.journal import now_rfc3339
from kurable.engine.messages import EXCERPT_LIMIT, one_line
from kurable.engine.sizes import DEFAULT_MAX_VALUE_BYTES
from kurable.store import entities as store
from kurable.store.entities import EntityRef

from . import metrics
from .entity_queue import EntityQueue

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 50
"""Transactions of one command that may lose the race for the entity's version (to
another process) before it gives up with EntityBusy."""
MAX_QUEUED = 1000
"""Commands of one process that may wait for one entity; one more raises EntityBusy."""
MAX_BATCH_COMMANDS = 32
"""Queued commands to one entity committed together in one transaction, at most."""
MAX_BATCH_OPERATIONS = 100
"""Writes in one batch's transaction, at most (etcd's --max-txn-ops is 128 by default);
a single command above it goes alone."""
MAX_BACKOFF_SECONDS = 0.2
"""The longest pause (seconds, jittered) before deciding again after a lost race."""
MAX_COMMAND_ID_LENGTH = 512
"""Characters; a command id is part of an etcd key."""
HANDLER_TIMEOUT = 30.0
"""Seconds a command's HTTP handler may take to answer before the attempt is retried."""
STATUS_ATTEMPTS = 10
"""Conditional status patches tried before leaving status to the operator's check."""

__all__ = [
    "AskHandler",
    "CommandConflict",
    "CommandRejected",
    "CommandResult",
    "EntityBusy",
    "EntityRef",
    "HandlerUnavailable",
    "OnCommitted",
    "execute_command",
    "http_handler",
    "project_entity_status",
    "status_projector",
]


class EntityBusy(Exception):
    """Every attempt lost the race for the entity's version; the command was not applied."""


class HandlerUnavailable(Exception):
    """The handler did not answer (connection, timeout, 5xx): nothing decided, retry."""


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
    offset: int = 0
    """The etcd revision that committed the command: its events' offset in the per-type
    stream (read-your-writes: a View query given it as `minOffset` sees the command)."""


OnCommitted = Callable[[EntityRef, CommandResult], Awaitable[None]]
AskHandler = Callable[[str, dict[str, Any], str], Awaitable[Any]]
"""Calls a command's HTTP handler: (url, {state, command, input, version}, command id)
-> its JSON answer. Raises HandlerUnavailable when it cannot tell (retry later)."""


# -- deciding and committing -------------------------------------------------------------


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
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
) -> CommandResult:
    """Apply `command` to `entity` exactly once per `command_id`; raise CommandRejected if refused.

    `entity` is an EntityRef or the Entity object; `entity_type` the EntityType object
    (preferred: its status tells whether it is Invalid), its spec, or an EntityTypeSpec.
    Raises CommandRejected(TypeInvalid) for an EntityType that is Invalid (nothing is
    read or recorded: the same id works once the type is fixed), CommandConflict when
    `command_id` was used for another command or input. `on_committed` is awaited after
    a new command commits (e.g. to project status); its failure is logged, never raised: the command
    is committed either way. Raises EntityBusy when `max_attempts` transactions lost the
    race (to other processes) or MAX_QUEUED commands of this process already wait for the
    entity, HandlerUnavailable when the command's handler could not answer, ValueError for
    a malformed command id. A command whose events, reply or commit exceed
    `max_value_bytes` (bytes of JSON, kurable.engine.sizes) is rejected (`ValueTooLarge`)
    before anything is written.
    """
    ref = entity if isinstance(entity, EntityRef) else EntityRef.from_object(entity)
    _check_command_id(command_id)
    spec = engine.usable_type(entity_type)
    queued = _Queued(
        spec,
        command,
        input,
        command_id,
        engine.command_fingerprint(command, input),
        max_attempts,
        ask,
        max_value_bytes,
        asyncio.get_running_loop().create_future(),
    )
    _queue(client, prefix, ref).put(queued)
    # Cancelling this await cancels the future: a command still waiting leaves the
    # queue unapplied; one already in a transaction commits or not, exactly once.
    clock = metrics.Stopwatch()
    try:
        result = await queued.future
    except Exception as e:
        metrics.command_done(ref.type, command, clock.seconds, type(e).__name__)
        raise
    metrics.command_done(
        ref.type, command, clock.seconds, "duplicate" if result.duplicate else "ok"
    )
    if on_committed is not None and not result.duplicate:
        try:
            await on_committed(ref, result)
        except Exception as e:
            log.warning(
                "command %s on %s/%s committed; notify failed: %s",
                command_id,
                ref.namespace,
                ref.name,
                e,
            )
    return result


# -- one queue per entity and process ------------------------------------------------------


@dataclass
class _Queued:
    """A command waiting in its entity's queue, and the future its sender awaits."""

    spec: EntityTypeSpec
    command: str
    input: Any
    command_id: str
    fingerprint: str
    max_attempts: int
    ask: AskHandler | None
    max_value_bytes: int
    future: asyncio.Future[CommandResult]
    lost: int = 0
    """Transactions of this command that lost the race for the entity's version."""


# Per etcd client (a client lives on one event loop, and so do the queues' futures):
# (prefix, entity uid) -> its queue. A queue is forgotten when it runs empty.
_QUEUES: weakref.WeakKeyDictionary[aetcd.Client, dict[tuple[str, str], _EntityCommands]] = (
    weakref.WeakKeyDictionary()
)


def _queue(client: aetcd.Client, prefix: str, ref: EntityRef) -> _EntityCommands:
    queues = _QUEUES.setdefault(client, {})
    key = (prefix, ref.uid)
    commands = queues.get(key)
    if commands is None:
        commands = queues[key] = _EntityCommands(client, prefix, ref, queues, key)
    return commands


class _EntityCommands:
    """This process's commands to one entity: queued in arrival order (EntityQueue), the
    oldest decided in order, each on the state the previous one left, and committed in
    ONE transaction (within etcd's limits on one), then the next ones. A lost race
    (another process committed meanwhile) reads and decides the same commands again."""

    def __init__(
        self,
        client: aetcd.Client,
        prefix: str,
        ref: EntityRef,
        registry: dict[tuple[str, str], _EntityCommands],
        key: tuple[str, str],
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ref = ref
        self.queue: EntityQueue[_Queued] = EntityQueue(
            self._commit,
            max_waiting=MAX_QUEUED,
            max_batch=MAX_BATCH_COMMANDS,
            on_idle=self._forget,
            name=f"kurable-entity-{ref.namespace}/{ref.name}",
        )
        self._registry = registry
        self._key = key

    def put(self, queued: _Queued) -> None:
        """Queue `queued`; raise EntityBusy when MAX_QUEUED commands already wait."""
        if not self.queue.put(queued):
            raise EntityBusy(
                f"entity {self.ref.namespace}/{self.ref.name}: {len(self.queue)} commands "
                f"of this process already wait for it (at most {MAX_QUEUED}); send fewer at "
                f"once or retry later; command {queued.command_id!r} was not applied"
            )

    def _forget(self, queue: EntityQueue[_Queued]) -> None:
        if self._registry.get(self._key) is self:
            del self._registry[self._key]

    async def _commit(self, batch: list[_Queued]) -> None:
        """Settle every command of `batch`: commit, find it recorded, or fail it."""
        pending = batch
        while pending := [q for q in pending if not q.future.done()]:
            read = await store.read_commands(
                self.client, self.prefix, self.ref, [q.command_id for q in pending]
            )
            decided, deferred = await self._decide(read, pending)
            if not decided:
                pending = deferred
                continue
            committed = await store.commit_commands(
                self.client, self.prefix, read, [d for _, d in decided], now_rfc3339()
            )
            if committed is None:
                lost = max(q.lost for q, _ in decided) + 1
                for queued, _ in decided:
                    queued.lost += 1
                    if queued.lost >= queued.max_attempts:
                        _settle(queued, error=self._busy(queued))
                pending = [q for q, _ in decided] + deferred
                await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF_SECONDS, 0.005 * 2**lost)))
                continue
            for (queued, one), result in zip(decided, committed, strict=True):
                if one.rejected is not None:
                    _settle(queued, error=one.rejected)
                else:
                    _settle(
                        queued,
                        CommandResult(
                            one.reply,
                            result.version,
                            False,
                            result.snapshot,
                            result.events,
                            result.offset,
                        ),
                    )
            pending = deferred

    async def _decide(
        self, read: store.CommandsRead, pending: list[_Queued]
    ) -> tuple[list[tuple[_Queued, store.Decided]], list[_Queued]]:
        """Decide `pending` in order, each on the state the previous left: the commands
        to commit now with their outcomes, and those left for the next transaction (it
        would grow past etcd's limits). Commands already recorded, and those whose
        deciding failed, are settled here."""
        decided: list[tuple[_Queued, store.Decided]] = []
        state = read.snapshot
        size = 0
        for index, queued in enumerate(pending):
            record = read.records.get(queued.command_id)
            if record is not None:
                _settle_recorded(
                    queued, record, read.snapshot, read.offsets.get(queued.command_id, 0)
                )
                continue
            try:
                base = state
                if base is None:
                    base = Snapshot(engine.initial_state(queued.spec, self.ref.initial_state))
                decision = await _decide(
                    queued.spec,
                    base,
                    queued.command,
                    queued.input,
                    queued.command_id,
                    queued.ask,
                )
                engine.check_commit_size(decision, queued.command, queued.max_value_bytes)
                one = store.Decided(
                    queued.command_id,
                    queued.command,
                    queued.fingerprint,
                    decision.events,
                    decision.state,
                    decision.reply,
                )
                after: Snapshot | None = Snapshot(
                    decision.state, base.version + len(decision.events)
                )
            except CommandRejected as rejection:
                one = store.Decided(
                    queued.command_id, queued.command, queued.fingerprint, rejected=rejection
                )
                after = state
            except Exception as e:  # HandlerUnavailable, a bug: this command only
                _settle(queued, error=e)
                continue
            grows = _commit_bytes(one)
            # The first command goes alone if need be (its own size was checked above);
            # the next join it only while the one request stays within etcd's limits:
            # the writes, and the bytes (everyone's events and replies, the last state).
            if decided and (
                store.commit_operations([d for _, d in decided] + [one]) > MAX_BATCH_OPERATIONS
                or size + grows + sizes.encoded_size(after.state if after else {})
                > queued.max_value_bytes
            ):
                return decided, pending[index:]
            decided.append((queued, one))
            size += grows
            state = after
        return decided, []

    def _busy(self, queued: _Queued) -> EntityBusy:
        return EntityBusy(
            f"entity {self.ref.namespace}/{self.ref.name}: {queued.lost} attempts lost the "
            f"race for its version (too many concurrent writers in other processes); "
            f"command {queued.command_id!r} was not applied"
        )


def _commit_bytes(one: store.Decided) -> int:
    """Bytes `one` adds to its batch's transaction besides the state (written once)."""
    if one.rejected is not None:
        return 0
    return 2 * sum(sizes.encoded_size(e.data) for e in one.events) + sizes.encoded_size(one.reply)


def _settle(
    queued: _Queued, result: CommandResult | None = None, *, error: BaseException | None = None
) -> None:
    if queued.future.done():  # its sender was cancelled
        return
    if error is not None:
        queued.future.set_exception(error)
    else:
        queued.future.set_result(result)  # type: ignore[arg-type]


def _settle_recorded(
    queued: _Queued, record: Mapping[str, Any], current: Snapshot | None, offset: int = 0
) -> None:
    """The command id was recorded before: answer as recorded (or CommandConflict)."""
    try:
        engine.check_same_command(record, queued.command_id, queued.command, queued.input)
    except CommandConflict as conflict:
        _settle(queued, error=conflict)
        return
    if "rejected" in record:
        _settle(queued, error=CommandRejected.from_json(record["rejected"]))
    else:
        _settle(
            queued,
            CommandResult(record.get("reply"), int(record["version"]), True, current, (), offset),
        )


async def _decide(
    spec: EntityTypeSpec,
    snapshot: Snapshot,
    command: str,
    input: Any,
    command_id: str,
    ask: AskHandler | None,
) -> engine.CommandAccepted:
    url = engine.handler_of(spec, command)
    if url is None:
        return engine.decide(spec, snapshot.state, command, input)
    # Asked again on every attempt (the state may have moved); the handler gets the
    # command id as Idempotency-Key, and only one answer commits.
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
    return engine.decide_answered(spec, snapshot.state, command, answer)


def _check_command_id(command_id: str) -> None:
    if not command_id or len(command_id) > MAX_COMMAND_ID_LENGTH or "\x00" in command_id:
        raise ValueError(
            f"a command id must be 1-{MAX_COMMAND_ID_LENGTH} characters without NUL, "
            f"got {command_id!r:.80}"
        )


# -- the command's HTTP handler ------------------------------------------------------------


def http_handler(session: aiohttp.ClientSession | None = None) -> AskHandler:
    """An `ask` for execute_command: POST `{state, command, input, version}` as JSON with
    `Idempotency-Key: <command id>`; a 2xx answer is `{events, reply}` or `{error}`.

    A 4xx is the handler refusing the command (recorded like any rejection); no answer,
    a timeout or a 5xx decides nothing (HandlerUnavailable: retry later)."""

    async def ask(url: str, payload: dict[str, Any], command_id: str) -> Any:
        if session is None:
            async with aiohttp.ClientSession() as own:
                return await _post(own, url, payload, command_id)
        return await _post(session, url, payload, command_id)

    return ask


async def _post(
    session: aiohttp.ClientSession, url: str, payload: dict[str, Any], command_id: str
) -> Any:
    try:
        async with session.post(
            url,
            json=payload,
            headers={"Idempotency-Key": command_id},
            timeout=aiohttp.ClientTimeout(total=HANDLER_TIMEOUT),
        ) as response:
            text = await response.text()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as e:
        raise HandlerUnavailable(
            f"handler {url}: {one_line(e or type(e).__name__, EXCERPT_LIMIT)}"
        ) from None
    if status >= 500 or status == 429:
        raise HandlerUnavailable(
            f"handler {url} answered {status}: {one_line(text, EXCERPT_LIMIT)}"
        )
    if status >= 400:
        return {"error": f"{status}: {one_line(text, EXCERPT_LIMIT)}"}
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"error": f"the answer is not JSON: {one_line(text, EXCERPT_LIMIT)}"}


# -- status ------------------------------------------------------------------------------


async def project_entity_status(
    api: k8s.ApiClient,
    namespace: str,
    name: str,
    snapshot: Snapshot,
    known: Mapping[str, Any] | None = None,
) -> bool:
    """Show `snapshot` in the Entity's status unless status already shows a newer version.

    Concurrent writers may finish in any order; each patch is conditional on the
    resourceVersion it was computed from, so status only moves forward. `known` is the
    Entity as last read (e.g. before the command): when its status shows the version
    just before `snapshot`'s (no other command's status came between), the first patch
    is computed from it, sparing a read; a conflict reads it again. Otherwise (several
    senders) it is likely stale, and a refused patch would cost more than the read.
    Returns whether status was patched.
    """
    custom = k8s.CustomObjectsApi(api)
    if known is not None and (known.get("status") or {}).get("version") != snapshot.version - 1:
        known = None
    for attempt in range(STATUS_ATTEMPTS + (known is not None)):
        try:
            obj = (
                known
                if attempt == 0 and known is not None
                else await custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, ENTITY.plural, name
                )
            )
        except k8s.ApiException as e:
            if e.status == 404:
                return False
            raise
        status = obj.get("status") or {}
        shown = status.get("version")
        ready = status.get("phase") == "Ready"
        if isinstance(shown, int) and (
            shown > snapshot.version or (shown == snapshot.version and ready)
        ):
            return False
        new = project_status(
            snapshot,
            generation=obj["metadata"].get("generation"),
            previous_conditions=status.get("conditions"),
            now=now_rfc3339(),
        )
        body = {
            "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
            "status": status_merge_patch(status, new),
        }
        try:
            await custom.patch_namespaced_custom_object_status(
                GROUP,
                VERSION,
                namespace,
                ENTITY.plural,
                name,
                body,
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            )
            return True
        except k8s.ApiException as e:
            if e.status not in (404, 409):
                raise
            if e.status == 404:
                return False
    return False


def status_projector(api: k8s.ApiClient, known: Mapping[str, Any] | None = None) -> OnCommitted:
    """An `on_committed` callback for `execute_command` that projects status through `api`
    (`known`: the Entity as read before the command, see `project_entity_status`).

    Projections of one entity in this process coalesce: while one is patching, those
    that come meanwhile wait for it, and then one of them patches the newest snapshot
    for all, so N commands committed together cost about two status writes rather than
    N racing ones (each a read and a conditional patch, retried on conflict). It returns
    once status shows this command's version or a later one; an error is raised to the
    caller whose patch failed (the others try again themselves)."""

    async def project(ref: EntityRef, result: CommandResult) -> None:
        if result.snapshot is not None:
            await _project_coalesced(api, ref, result.snapshot, known)

    return project


@dataclass
class _StatusRounds:
    """One entity's status projections in this process: the newest snapshot asked for,
    the newest version a finished round showed, and the round in progress."""

    newest: Snapshot
    shown: int = -1
    running: asyncio.Event | None = None
    """Set when the round in progress ends; None when no round runs."""
    users: int = 0


# Per API client (it lives on one event loop, as the events do): entity uid -> rounds.
# An entry goes when its last caller leaves.
_STATUS_ROUNDS: weakref.WeakKeyDictionary[k8s.ApiClient, dict[str, _StatusRounds]] = (
    weakref.WeakKeyDictionary()
)


async def _project_coalesced(
    api: k8s.ApiClient, ref: EntityRef, snapshot: Snapshot, known: Mapping[str, Any] | None
) -> None:
    entities = _STATUS_ROUNDS.setdefault(api, {})
    rounds = entities.setdefault(ref.uid, _StatusRounds(snapshot))
    if snapshot.version > rounds.newest.version:
        rounds.newest = snapshot
    rounds.users += 1
    try:
        while rounds.shown < snapshot.version:
            if rounds.running is not None:
                await rounds.running.wait()
                continue
            ended = rounds.running = asyncio.Event()
            target = rounds.newest
            try:
                await project_entity_status(api, ref.namespace, ref.name, target, known)
                rounds.shown = max(rounds.shown, target.version)
            finally:
                rounds.running = None
                ended.set()
    finally:
        rounds.users -= 1
        if not rounds.users and entities.get(ref.uid) is rounds:
            del entities[ref.uid]
