"""Entity commands, exactly once: decide, call the handler, commit, retry; then status.

`execute_command` reads the entity's snapshot and the command id's dedup record at
one revision (`store.entities.read_command`), decides purely
(`kurable.engine.entities.decide`, or the command's HTTP handler's answer through
`decide_answered`), and commits with ONE transaction (`store.entities.commit_command`)
that succeeds only if the snapshot is still the one read and the command id is still
unknown. A lost race reads and decides again (bounded, with jitter); a command id
seen before returns its original reply (or rejection) and changes nothing, provided
it is the same command with the same input (the record keeps a fingerprint of both):
an id reused for anything else raises CommandConflict.

Commands to an EntityType whose status says `Invalid` are refused (`TypeInvalid`,
with the type's status message) before anything is read: its definition cannot be
trusted to decide.

After a commit, the new state is projected into the Entity's status
(`project_entity_status`); a sender that dies before that leaves status behind, and
the operator's periodic check puts it right.

Every sender uses this path: a workflow's `entity` step, the Python client, the CLI.
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
import aiohttp
from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import ENTITY, GROUP, VERSION, EntityTypeSpec
from kurable.engine import entities as engine
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

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 50
"""Transactions tried per command before giving up with EntityBusy."""
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
    race, HandlerUnavailable when the command's handler could not answer, ValueError for
    a malformed command id. A command whose events, reply or commit exceed
    `max_value_bytes` (bytes of JSON, kurable.engine.sizes) is rejected (`ValueTooLarge`)
    before anything is written.
    """
    ref = entity if isinstance(entity, EntityRef) else EntityRef.from_object(entity)
    _check_command_id(command_id)
    spec = engine.usable_type(entity_type)
    async with _lock(client, ref.uid):
        result = await _execute(
            client,
            prefix,
            ref,
            spec,
            command,
            input,
            command_id,
            max_attempts,
            ask,
            max_value_bytes,
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
    max_value_bytes: int,
) -> CommandResult:
    fingerprint = engine.command_fingerprint(command, input)
    for attempt in range(max_attempts):
        if attempt:
            await asyncio.sleep(random.uniform(0, min(MAX_BACKOFF_SECONDS, 0.005 * 2**attempt)))
        read = await store.read_command(client, prefix, ref, command_id)
        if read.record is not None:
            engine.check_same_command(read.record, command_id, command, input)
            if "rejected" in read.record:
                raise CommandRejected.from_json(read.record["rejected"])
            return CommandResult(
                read.record.get("reply"), int(read.record["version"]), True, read.snapshot
            )
        at = now_rfc3339()
        try:
            snapshot = read.snapshot
            if snapshot is None:
                snapshot = Snapshot(engine.initial_state(spec, ref.initial_state))
            decision = await _decide(spec, snapshot, command, input, command_id, ask)
            engine.check_commit_size(decision, command, max_value_bytes)
        except CommandRejected as rejection:
            if await store.commit_rejection(
                client, prefix, read, command, fingerprint, rejection, at
            ):
                raise
            continue
        committed = await store.commit_command(
            client,
            prefix,
            read,
            command,
            fingerprint,
            snapshot,
            decision.events,
            decision.state,
            decision.reply,
            at,
        )
        if committed is not None:
            current, events, version = committed
            return CommandResult(decision.reply, version, False, current, events)
    raise EntityBusy(
        f"entity {ref.namespace}/{ref.name}: {max_attempts} attempts lost the race for its "
        f"version (too many concurrent writers); command {command_id!r} was not applied"
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
    api: k8s.ApiClient, namespace: str, name: str, snapshot: Snapshot
) -> bool:
    """Show `snapshot` in the Entity's status unless status already shows a newer version.

    Concurrent writers may finish in any order; each patch is conditional on the
    resourceVersion it was computed from, so status only moves forward. Returns
    whether status was patched.
    """
    custom = k8s.CustomObjectsApi(api)
    for _ in range(STATUS_ATTEMPTS):
        try:
            obj = await custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, ENTITY.plural, name
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


def status_projector(api: k8s.ApiClient) -> OnCommitted:
    """An `on_committed` callback for `execute_command` that projects status through `api`."""

    async def project(ref: EntityRef, result: CommandResult) -> None:
        if result.snapshot is not None:
            await project_entity_status(api, ref.namespace, ref.name, result.snapshot)

    return project
