"""The consumer driver: one task per Consumer reads its source stream and acts on each
message, at least once in delivery and exactly once in effect.

A pass reads a page of the source (kurable.store.streams) after the consumer's offset,
turns each item into a message (kurable.engine.consumers), lets the filter decide, and
performs the action with an identity derived from the consumer's uid and the message id:
the entity command id (through the one entity-command path, kurable.executor.commands),
the run's name, the HTTP `Idempotency-Key`, the emitted message's id. Then it commits the
offset in etcd. A crash between acting and committing delivers the message again, and
the action's identity makes the second delivery change nothing.

Order and concurrency: with `concurrency: 1` each message commits the offset on its own.
With more, a page is split by key: up to `concurrency` keys run at once, the messages of
one key in order. Each message handled records its key's progress (`keys.consumer_key`);
when the whole page is done, one transaction moves the offset past it and drops those
records. A driver that starts again (a crash mid-page) skips, per key, what the records
say is done. Every commit compares the offset record's revision with the one this driver
read and this executor's live key (kurable.store.journal.Fence): a replica that lost the
consumer (or its lease) commits nothing.

Failures: an action that fails is tried again after a backoff (spec.retry), up to
maxAttempts; then the message goes to the dead-letter topic with its error and the
consumer moves on (`onFailure: deadLetter`), or the consumer stops with condition Stalled,
reason PoisonMessage and the offset (`block`) until its spec changes. A topic trimmed past
the offset stops it with Stalled, reason OffsetTrimmed, instead of skipping silently.

A Consumer is driven by one task of the replica that owns it (sharding as for runs and
Schedules: `ConsumerDrivers.owns`/`disown`), started by kopf's daemon
(kurable.handlers.consumer).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import (
    CONSUMER,
    ENTITY,
    ENTITY_TYPE,
    GROUP,
    TOPIC,
    VERSION,
    WORKFLOW,
    WORKFLOW_TEMPLATE,
    ConsumerSpec,
    parse_duration,
)
from kurable.engine import consumers as engine
from kurable.engine import expressions
from kurable.engine.conditions import same_status, updated_condition
from kurable.engine.entities import CommandConflict, CommandRejected
from kurable.engine.journal import now_rfc3339
from kurable.engine.messages import EXCERPT_LIMIT, one_line
from kurable.engine.validate import describe
from kurable.store import keys, streams
from kurable.store import topics as topic_store

from .actions import RunRef
from .actions.http import DEFAULT_HTTP_TIMEOUT, _secret_value
from .commands import (
    EntityBusy,
    HandlerUnavailable,
    execute_command,
    http_handler,
    status_projector,
)
from .drivers import Logger
from .errors import api_error_message, describe_error
from .owned import OwnedDrivers
from .runtime import Runtime
from .topics import (
    InvalidMessage,
    MessageConflict,
    TopicNotFound,
    publish_message,
    publish_unchecked,
)

PAGE = 100
"""Stream items read per pass."""
POLL_SECONDS = 30.0
"""The longest an idle driver waits without reading (new items wake it through a watch)."""
RETRY_SECONDS = 5.0
"""After a pass failed (etcd or the API server unreachable): try again this much later."""
SOURCE_POLL_SECONDS = 10.0
"""While the source does not exist: look again this often."""
STATUS_SECONDS = 1.0
"""Status is patched at most this often while messages flow (and when the consumer idles)."""


def consumer_drivers(runtime: Runtime) -> ConsumerDrivers:
    """The Consumers this process drives: those it owns among the replicas."""
    return ConsumerDrivers(runtime, owns=runtime.shards.owns)


class ConsumerDrivers(OwnedDrivers):
    """One task per Consumer in this process (like kurable.executor.schedules'
    ScheduleDrivers): a replica drives only the Consumers it `owns(uid)` and lets go of
    the others when the members change (`disown`)."""

    _label = "consumer"

    def _make(self, body: Mapping[str, Any], ref: RunRef, logger: Logger) -> ConsumerDriver:
        return ConsumerDriver(self.runtime, body, ref, logger)


@dataclass
class Progress:
    """A consumer's offset record in etcd (`keys.consumer_offset`)."""

    offset: int = 0
    start_from: str | None = None
    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    revision: int = 0
    """The record's mod revision as read or written here (0: no record)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "startFrom": self.start_from,
            "processed": self.processed,
            "failed": self.failed,
            "deadLettered": self.dead_lettered,
            "lastError": self.last_error,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], revision: int) -> Progress:
        return cls(
            offset=int(raw.get("offset") or 0),
            start_from=raw.get("startFrom"),
            processed=int(raw.get("processed") or 0),
            failed=int(raw.get("failed") or 0),
            dead_lettered=int(raw.get("deadLettered") or 0),
            last_error=raw.get("lastError"),
            revision=revision,
        )


@dataclass
class Tally:
    """What handling messages did, to add to the offset record."""

    processed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    last_error: str | None = None

    def add(self, other: Tally) -> None:
        self.processed += other.processed
        self.failed += other.failed
        self.dead_lettered += other.dead_lettered
        self.last_error = other.last_error or self.last_error

    def to_json(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "failed": self.failed,
            "deadLettered": self.dead_lettered,
            "lastError": self.last_error,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Tally:
        return cls(
            int(raw.get("processed") or 0),
            int(raw.get("failed") or 0),
            int(raw.get("deadLettered") or 0),
            raw.get("lastError"),
        )


class Lost(Exception):
    """The offset record changed under this driver (another replica drives it now, or
    this executor's lease ended): read it again."""


class _Stop(Exception):
    """The consumer cannot go on until something changes; status says why."""

    def __init__(self, delay: float | None, generation: Any = None) -> None:
        super().__init__()
        self.delay = delay
        self.generation = generation
        """Wait until the spec's generation differs from this (None: until `delay`)."""


class Poison(Exception):
    """onFailure: block, and a message failed maxAttempts times."""

    def __init__(self, message: engine.Message, error: str) -> None:
        super().__init__(error)
        self.message = message
        self.error = error


@dataclass(frozen=True)
class Failure:
    """Why an action failed, and whether trying again may help."""

    text: str
    retryable: bool = True


@dataclass
class _Driving:
    """What one pass works with."""

    obj: Mapping[str, Any]
    spec: ConsumerSpec
    stream: str
    progress: Progress
    failing: dict[str, str] = field(default_factory=dict)
    """Messages being retried now: id -> the last error."""


class ConsumerDriver:
    """One process's hold on one Consumer."""

    def __init__(
        self, runtime: Runtime, body: Mapping[str, Any], ref: RunRef, logger: Logger
    ) -> None:
        self.runtime = runtime
        self.body = body
        self.ref = ref
        self.logger = logger
        self.wakeup = runtime.wakeup(ref.uid)
        self.said = ""
        self.last_status: dict[str, Any] | None = None
        self.last_patch = 0.0
        self.failing: dict[str, str] = {}
        self.objects: dict[tuple[str, str], dict[str, Any] | None] = {}
        """Entities and EntityTypes read during this pass (read once per pass, not per
        message: a page's messages to one entity cost one read)."""
        self.project = status_projector(runtime.api)
        self.cursor: streams.Cursor | None = None
        """Reads the source's stream (a backlog in one pass; replaced when the source
        changes)."""

    def close(self) -> None:
        self.runtime.unsubscribe(self.ref.uid, self.wakeup)

    @property
    def prefix(self) -> str:
        return self.runtime.prefix

    @property
    def offset_key(self) -> bytes:
        return keys.consumer_offset(self.prefix, self.ref.namespace, self.ref.uid).encode()

    async def drive(self) -> None:
        """Pass after pass until the Consumer is gone (or the task is cancelled)."""
        stopped_at: Any = None
        while True:
            self.wakeup.clear()
            try:
                obj = await self.runtime.get(CONSUMER, self.ref.namespace, self.ref.name)
                if obj is None or obj["metadata"]["uid"] != self.ref.uid:
                    return
                self.body = obj
                generation = obj["metadata"].get("generation")
                if stopped_at is not None and generation == stopped_at:
                    delay: float | None = POLL_SECONDS
                else:
                    stopped_at = None
                    delay = await self.pass_once(obj)
            except _Stop as stop:
                stopped_at = stop.generation
                delay = stop.delay
            except Lost as e:
                self.logger.info(f"consumer offset moved elsewhere ({e}); reading it again")
                delay = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # an outage: the next pass starts from the offset again
                self.logger.warning(f"consumer pass failed, retrying: {describe_error(e)}")
                delay = RETRY_SECONDS
            if delay is None:
                continue
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), delay)

    # -- one pass --------------------------------------------------------------------------

    async def pass_once(self, obj: Mapping[str, Any]) -> float | None:
        """Read a page after the offset and handle it; the seconds to wait before the next
        pass (0: go on at once; None: at once, too)."""
        self.objects.clear()
        spec = await self._valid(obj)
        stream = await self._stream(obj, spec)
        progress = await self._load()
        progress = await self._position(obj, spec, stream, progress)
        if spec.suspend:
            await self._status(obj, spec, stream, progress, force=True)
            raise _Stop(POLL_SECONDS)
        if spec.source.topic is not None:
            trimmed_offset, _ = await topic_store.trimmed(
                self.runtime.etcd, self.prefix, self.ref.namespace, spec.source.topic
            )
            if trimmed_offset > progress.offset:
                await self._stalled(
                    obj,
                    spec,
                    stream,
                    progress,
                    "OffsetTrimmed",
                    f"topic {spec.source.topic} was trimmed by its retention up to offset "
                    f"{trimmed_offset}, past this consumer's offset {progress.offset}: messages "
                    "were lost to it; change spec.startFrom to move on",
                )
        if self.cursor is None or self.cursor.prefix != stream:
            self.cursor = streams.Cursor(self.runtime.etcd, stream)
        items, revision = await self.cursor.read_page(progress.offset, PAGE)
        if not items:
            # Caught up: the status patches throttled while messages flowed land now.
            await self._status(obj, spec, stream, progress, force=True)
            await self._wait_for_items(stream, revision)
            return None
        driving = _Driving(obj, spec, stream, progress)
        try:
            if spec.concurrency <= 1:
                await self._one_by_one(driving, items)
            else:
                await self._by_key(driving, items)
        except Poison as poison:
            await self._stalled(
                obj,
                spec,
                stream,
                driving.progress,
                "PoisonMessage",
                f"message {poison.message.id} (offset {poison.message.offset}, key "
                f"{poison.message.key!r}) failed {engine.max_attempts(spec)} times: "
                f"{poison.error}; the consumer is blocked at offset {driving.progress.offset} "
                "(onFailure: block) until its spec changes",
            )
        await self._status(obj, spec, stream, driving.progress)
        return 0.0

    async def _valid(self, obj: Mapping[str, Any]) -> ConsumerSpec:
        try:
            return engine.parse(obj.get("spec") or {})
        except engine.InvalidConsumer as e:
            raise await self._not_ready(obj, "Invalid", describe(e.problems), None) from None

    async def _stream(self, obj: Mapping[str, Any], spec: ConsumerSpec) -> str:
        """The source's stream prefix; SourceNotFound when the source does not exist."""
        source, ns = spec.source, self.ref.namespace
        if source.entity_type is not None:
            kind, name, field_, stream = (
                ENTITY_TYPE,
                source.entity_type,
                "spec.source.entityType",
                keys.type_events(self.prefix, ns, source.entity_type),
            )
        elif source.topic is not None:
            kind, name, field_, stream = (
                TOPIC,
                source.topic,
                "spec.source.topic",
                keys.topic_messages(self.prefix, ns, source.topic),
            )
        else:
            assert source.workflows is not None
            template = source.workflows.template_ref.name
            kind, name, field_, stream = (
                WORKFLOW_TEMPLATE,
                template,
                "spec.source.workflows.templateRef",
                keys.template_changes(self.prefix, ns, template),
            )
        if await self.runtime.get(kind, ns, name) is None:
            raise await self._not_ready(
                obj,
                "SourceNotFound",
                f"{field_}: {kind.kind} {name!r} does not exist in namespace {ns}: create it "
                "(the consumer starts once it exists)",
                SOURCE_POLL_SECONDS,
            )
        return stream

    async def _load(self) -> Progress:
        got = await self.runtime.etcd.get(self.offset_key)
        if got is None:
            return Progress()
        return Progress.from_json(json.loads(got.value), int(got.mod_revision))

    async def _position(
        self, obj: Mapping[str, Any], spec: ConsumerSpec, stream: str, progress: Progress
    ) -> Progress:
        """The progress, moved to spec.startFrom when the consumer is new or it changed."""
        if progress.revision and progress.start_from == spec.start_from:
            return progress
        etcd = self.runtime.etcd
        if spec.start_from == "latest":
            offset = await streams.head(etcd, stream)
        elif spec.start_from == "beginning":
            offset = 0
            if spec.source.topic is not None:
                offset, _ = await topic_store.trimmed(
                    etcd, self.prefix, self.ref.namespace, spec.source.topic
                )
        else:
            offset = await self._offset_at(stream, spec.start_from)
        moved = replace(progress, offset=offset, start_from=spec.start_from)
        await self._commit(moved, [])
        if progress.revision:
            self._event("Normal", "Repositioned", f"startFrom {spec.start_from}: offset {offset}")
        return moved

    async def _offset_at(self, stream: str, start_from: str) -> int:
        """The offset before the first item written at or after `start_from`."""
        from kurable.engine.journal import parse_time

        moment = parse_time(start_from)
        after = 0
        while True:
            page = await streams.read(self.runtime.etcd, stream, after, PAGE)
            if not page:
                return after
            for item in page:
                written = engine.time_of(item.value)
                if written is not None and written >= moment:
                    return item.offset - 1
                after = item.offset

    async def _wait_for_items(self, stream: str, revision: int) -> None:
        """Until an item is written after `revision`, the Consumer changes, or POLL_SECONDS."""
        watch = await self.runtime.etcd.watch_prefix(stream.encode(), start_revision=revision + 1)
        try:
            nxt = asyncio.ensure_future(watch.__aiter__().__anext__())
            woken = asyncio.ensure_future(self.wakeup.wait())
            try:
                await asyncio.wait(
                    {nxt, woken}, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED"
                )
            finally:
                for task in (nxt, woken):
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
        finally:
            with contextlib.suppress(Exception):
                await watch.cancel()

    # -- handling messages -----------------------------------------------------------------

    async def _one_by_one(self, driving: _Driving, items: list[streams.StreamItem]) -> None:
        """concurrency 1: each message handled, then the offset moved past it. Items
        written by one transaction share an offset (an entity command's events, the
        records a run commits at once): the offset moves past all of them together, so
        that a crash between two of them delivers them again rather than skipping one."""
        for offset, group in itertools.groupby(items, key=lambda item: item.offset):
            moved = replace(driving.progress, offset=offset)
            for item in group:
                _add(moved, await self._handle(driving, item))
            await self._commit(moved, [])
            driving.progress = moved
            await self._status(driving.obj, driving.spec, driving.stream, moved)

    async def _by_key(self, driving: _Driving, items: list[streams.StreamItem]) -> None:
        """concurrency > 1: the page's keys in parallel, each key's messages in order; the
        offset moves past the page once all of it is handled."""
        etcd = self.runtime.etcd
        records_prefix = keys.consumer_keys(self.prefix, self.ref.namespace, self.ref.uid)
        listed = await etcd.get_prefix(records_prefix.encode())
        # Per lane: how far it got, as (offset, items of that offset handled) -- the items
        # of one revision share an offset (an entity command's events, a run's records
        # committed at once), so the offset alone cannot say which of them were handled.
        # A record of an older version has no count: all items of its offset were handled.
        done: dict[str, tuple[tuple[int, float], Tally]] = {}
        for kv in listed:
            raw = json.loads(kv.value)
            digest = kv.key.decode()[len(records_prefix) :]
            count = raw.get("handledAtOffset")
            mark = (int(raw.get("offset") or 0), float("inf") if count is None else int(count))
            done[digest] = (mark, Tally.from_json(raw))
        lanes: dict[str, list[tuple[streams.StreamItem, engine.Message | None]]] = {}
        for item in items:
            message = engine.message_of(driving.spec, self.ref.namespace, item.offset, item.value)
            lane = topic_store.digest(message.key if message else "")
            lanes.setdefault(lane, []).append((item, message))
        gate = asyncio.Semaphore(driving.spec.concurrency)

        async def run_lane(digest: str, lane: list[Any]) -> None:
            handled, tally = done.get(digest, ((0, 0), Tally()))
            seen: dict[int, int] = {}
            async with gate:
                for item, _ in lane:
                    index = seen.get(item.offset, 0)
                    seen[item.offset] = index + 1
                    if (item.offset, index) < handled:
                        continue  # handled before a crash: its record says so
                    tally.add(await self._handle(driving, item))
                    handled = (item.offset, index + 1)
                    record = {
                        "offset": item.offset,
                        "handledAtOffset": index + 1,
                        **tally.to_json(),
                    }
                    await self._put_fenced(
                        keys.consumer_key(self.prefix, self.ref.namespace, self.ref.uid, digest),
                        record,
                        driving.progress.revision,
                    )
            done[digest] = (handled, tally)

        tasks = [asyncio.create_task(run_lane(d, lane)) for d, lane in lanes.items()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        moved = replace(driving.progress, offset=items[-1].offset)
        for _, tally in done.values():
            _add(moved, tally)
        await self._commit(moved, [records_prefix])
        driving.progress = moved

    async def _handle(self, driving: _Driving, item: streams.StreamItem) -> Tally:
        """Handle one item: filter, act (with retries), dead-letter or raise Poison."""
        spec = driving.spec
        message = engine.message_of(spec, self.ref.namespace, item.offset, item.value)
        tally = Tally()
        if message is None:
            return tally
        try:
            if not engine.wanted(spec, message):
                return tally
        except expressions.ExpressionError as e:
            error: Failure | None = Failure(f"spec.filter: {e}", retryable=False)
        else:
            error = None
        attempts = engine.max_attempts(spec)
        attempt = 0
        while error is None or (error.retryable and attempt < attempts):
            attempt += 1
            error = await self._act(spec, message)
            if error is None:
                tally.processed += 1
                self.failing.pop(message.id, None)
                return tally
            tally.failed += 1
            tally.last_error = f"message {message.id}: {error.text}"
            self.failing[message.id] = tally.last_error
            self.logger.warning(f"attempt {attempt} of message {message.id}: {error.text}")
            if error.retryable and attempt < attempts:
                await self._status(
                    driving.obj, spec, driving.stream, _with(driving.progress, tally), force=True
                )
                await asyncio.sleep(engine.backoff_seconds(spec, attempt))
        self.failing.pop(message.id, None)
        assert error is not None
        if spec.on_failure == "block":
            self.failing[message.id] = tally.last_error or error.text
            raise Poison(message, error.text)
        await self._dead_letter(spec, message, error.text, attempt)
        tally.dead_lettered += 1
        return tally

    async def _dead_letter(
        self, spec: ConsumerSpec, message: engine.Message, error: str, attempts: int
    ) -> None:
        topic = engine.dead_letter_topic(self.ref.name, spec)
        await publish_unchecked(
            self.runtime.etcd,
            self.prefix,
            namespace=self.ref.namespace,
            name=topic,
            id=engine.dead_letter_id(self.ref.uid, message.id),
            key=message.key,
            data={
                "message": message.envelope(),
                "data": message.data,
                "error": error,
                "attempts": attempts,
                "consumer": self.ref.name,
            },
            type="DeadLetter",
            source=f"/namespaces/{self.ref.namespace}/consumers/{self.ref.name}",
        )
        self._event("Warning", "DeadLettered", f"message {message.id} to topic {topic}: {error}")

    async def _act(self, spec: ConsumerSpec, message: engine.Message) -> Failure | None:
        """Perform the action once; None when it took effect (now or before)."""
        action = spec.action
        context = message.context()
        try:
            if action.entity is not None:
                return await self._command(action.entity, message, context)
            if action.workflow is not None:
                return await self._start_run(action.workflow, message, context)
            if action.http is not None:
                return await self._call(action.http, message, context)
            assert action.emit is not None
            return await self._emit(action.emit, message, context)
        except expressions.ExpressionError as e:
            return Failure(f"ExpressionError: {e}", retryable=False)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # an outage: retried like any failure
            return Failure(describe_error(e))

    async def _command(
        self, spec: Any, message: engine.Message, context: dict[str, Any]
    ) -> Failure | None:
        where = "spec.action.entity"
        name = str(expressions.render(spec.name, context, f"{where}.name"))
        ns = self.ref.namespace
        entity = await self._get(ENTITY, ns, name)
        if entity is None:
            return Failure(f"EntityNotFound: Entity {name!r} not found in namespace {ns}")
        type_name = (entity.get("spec") or {}).get("type", "")
        entity_type = await self._get(ENTITY_TYPE, ns, type_name)
        if entity_type is None:
            return Failure(f"EntityTypeNotFound: EntityType {type_name!r} of {name!r} not found")
        command_input = expressions.render(spec.input, context, f"{where}.input")
        try:
            await execute_command(
                self.runtime.etcd,
                self.prefix,
                entity,
                entity_type,
                spec.command,
                command_input,
                engine.action_id(self.ref.uid, message.id),
                on_committed=self._project_later,
                ask=http_handler(self.runtime.http),
                max_value_bytes=self.runtime.settings.max_value_bytes,
            )
        except (HandlerUnavailable, EntityBusy) as e:
            return Failure(f"Unavailable: {name}.{spec.command}: {e}")
        except CommandRejected as e:
            return Failure(f"CommandRejected: {name}.{spec.command}: {e}", retryable=False)
        except CommandConflict as e:
            return Failure(f"CommandConflict: {name}.{spec.command}: {e}", retryable=False)
        return None

    async def _get(self, kind: Any, namespace: str, name: str) -> dict[str, Any] | None:
        """An object read once per pass (a missing one is read again: it may appear)."""
        key = (kind.plural, name)
        found = self.objects.get(key)
        if found is None:
            found = await self.runtime.get(kind, namespace, name)
            self.objects[key] = found
        return found

    async def _project_later(self, ref: Any, result: Any) -> None:
        """Project the entity's status in the background: the command is committed, and
        status is a projection (one entity's projections coalesce; the operator's
        periodic check repairs one that failed), so the next message need not wait."""
        task = asyncio.create_task(self._project_quietly(ref, result))
        self.runtime.background.add(task)
        task.add_done_callback(self.runtime.background.discard)

    async def _project_quietly(self, ref: Any, result: Any) -> None:
        try:
            await self.project(ref, result)
        except Exception as e:
            self.logger.warning(f"could not project the status of {ref.name}: {e}")

    async def _start_run(
        self, spec: Any, message: engine.Message, context: dict[str, Any]
    ) -> Failure | None:
        name = engine.run_name(self.ref.name, self.ref.uid, message.id)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": WORKFLOW.kind,
            "metadata": {
                "name": name,
                "labels": {engine.CONSUMER_LABEL: self.ref.name},
                "annotations": {engine.MESSAGE_ANNOTATION: message.id},
            },
            "spec": {
                "templateRef": {"name": spec.template_ref.name},
                "input": expressions.render(spec.input, context, "spec.action.workflow.input"),
            },
        }
        try:
            await k8s.CustomObjectsApi(self.runtime.api).create_namespaced_custom_object(
                GROUP, VERSION, self.ref.namespace, WORKFLOW.plural, body
            )
        except k8s.ApiException as e:
            if e.status == 409:  # started by an earlier delivery of this message
                return None
            retryable = e.status not in (400, 422)
            return Failure(f"RunRejected: cannot start {name}: {api_error_message(e)}", retryable)
        return None

    async def _call(
        self, spec: Any, message: engine.Message, context: dict[str, Any]
    ) -> Failure | None:
        where = "spec.action.http"
        url = str(expressions.render(spec.url, context, f"{where}.url"))
        headers = {"Idempotency-Key": engine.action_id(self.ref.uid, message.id)}
        for header in spec.headers or []:
            if header.value_from is not None:
                ref = header.value_from.secret_key_ref
                value = await _secret_value(self.runtime, self.ref.namespace, ref.name, ref.key)
                if value is None:
                    return Failure(f"SecretNotFound: key {ref.key!r} of Secret {ref.name!r}")
            else:
                value = str(expressions.render(header.value, context, f"{where}.headers"))
            headers[header.name] = value
        body = expressions.render(spec.body, context, f"{where}.body")
        timeout = parse_duration(spec.timeout).total_seconds() if spec.timeout else None
        try:
            async with self.runtime.http.request(
                spec.method,
                url,
                headers=headers,
                json=body if body is not None and spec.method != "GET" else None,
                timeout=aiohttp.ClientTimeout(total=timeout or DEFAULT_HTTP_TIMEOUT),
            ) as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            return Failure(f"Timeout: {spec.method} {url}: no answer in time")
        except aiohttp.ClientError as e:
            return Failure(f"ConnectionError: {spec.method} {url}: {one_line(e, EXCERPT_LIMIT)}")
        if 200 <= status < 300:
            return None
        detail = f"{spec.method} {url} answered {status}: {one_line(text, EXCERPT_LIMIT)}"
        return Failure(detail, retryable=status >= 500 or status in (408, 429))

    async def _emit(
        self, spec: Any, message: engine.Message, context: dict[str, Any]
    ) -> Failure | None:
        key = expressions.render(spec.key, context, "spec.action.emit.key") if spec.key else None
        topic = await self.runtime.get(TOPIC, self.ref.namespace, spec.topic)
        try:
            await publish_message(
                self.runtime.etcd,
                self.prefix,
                topic,
                namespace=self.ref.namespace,
                name=spec.topic,
                id=engine.action_id(self.ref.uid, message.id),
                key=str(key if key is not None else message.key),
                data=expressions.render(spec.data, context, "spec.action.emit.data"),
                type=message.type,
                source=f"/namespaces/{self.ref.namespace}/consumers/{self.ref.name}",
            )
        except TopicNotFound as e:
            return Failure(f"TopicNotFound: {e}")
        except InvalidMessage as e:
            return Failure(f"InvalidMessage: {e}", retryable=False)
        except MessageConflict as e:
            return Failure(f"MessageConflict: {e}", retryable=False)
        return None

    # -- etcd --------------------------------------------------------------------------------

    async def _commit(self, progress: Progress, drop: list[str]) -> None:
        """Write the offset record (and delete the `drop` prefixes) if it is still the one
        this driver read and this executor is alive; else raise Lost."""
        etcd = self.runtime.etcd
        tx = etcd.transactions
        fence = self.runtime.fence
        guard = (
            tx.mod(self.offset_key) == progress.revision
            if progress.revision
            else tx.create(self.offset_key) == 0
        )
        ops = [tx.put(self.offset_key, json.dumps(progress.to_json()).encode())]
        ops += [tx.delete(p.encode(), keys.range_end(p).encode()) for p in drop]
        ok, responses = await etcd.transaction(
            compare=[guard, tx.value(fence.key) == fence.id.encode()], success=ops, failure=[]
        )
        if not ok:
            raise Lost(f"offset record of consumer {self.ref.namespace}/{self.ref.name}")
        progress.revision = int(responses[0].response_put.header.revision)

    async def _put_fenced(self, key: str, value: dict[str, Any], revision: int) -> None:
        etcd = self.runtime.etcd
        tx = etcd.transactions
        fence = self.runtime.fence
        ok, _ = await etcd.transaction(
            compare=[
                tx.mod(self.offset_key) == revision,
                tx.value(fence.key) == fence.id.encode(),
            ],
            success=[tx.put(key.encode(), json.dumps(value).encode())],
            failure=[],
        )
        if not ok:
            raise Lost(f"offset record of consumer {self.ref.namespace}/{self.ref.name}")

    # -- status ------------------------------------------------------------------------------

    async def _status(
        self,
        obj: Mapping[str, Any],
        spec: ConsumerSpec,
        stream: str,
        progress: Progress,
        force: bool = False,
        stalled: tuple[str, str] | None = None,
    ) -> None:
        """Project status from the progress (at most every STATUS_SECONDS unless forced)."""
        now = time.monotonic()
        if not force and stalled is None and now - self.last_patch < STATUS_SECONDS:
            return
        generation = obj["metadata"].get("generation")
        previous = (self.last_status or dict(obj.get("status") or {})).get("conditions")
        lag = await streams.lag(self.runtime.etcd, stream, progress.offset)
        at = now_rfc3339()
        failing = next(iter(self.failing.values()), None)
        if stalled is not None:
            ready: tuple[Literal["True", "False"], str, str] = ("False", stalled[0], stalled[1])
        elif spec.suspend:
            ready = ("False", "Suspended", "spec.suspend is true")
        else:
            ready = ("True", "Consuming", f"consuming {engine.describe_source(spec)}")
        conditions = [
            updated_condition(
                "Ready", ready[0], ready[1], ready[2], generation, previous, at
            ).to_status(),
            updated_condition(
                "Degraded",
                "True" if failing else "False",
                "MessageFailing" if failing else "Healthy",
                failing or "",
                generation,
                previous,
                at,
            ).to_status(),
            updated_condition(
                "Stalled",
                "True" if stalled else "False",
                stalled[0] if stalled else "Progressing",
                stalled[1] if stalled else "",
                generation,
                previous,
                at,
            ).to_status(),
        ]
        status = {
            "source": engine.describe_source(spec),
            "offset": progress.offset,
            "lag": lag,
            "processed": progress.processed,
            "failed": progress.failed,
            "deadLettered": progress.dead_lettered,
            "lastError": progress.last_error,
            "message": stalled[1] if stalled else None,
            "observedGeneration": generation,
            "conditions": conditions,
        }
        if self.last_status is not None and same_status(status, self.last_status):
            return
        await self.runtime.patch_status(CONSUMER, self.ref.namespace, self.ref.name, status)
        self.last_status = status
        self.last_patch = now

    async def _stalled(
        self,
        obj: Mapping[str, Any],
        spec: ConsumerSpec,
        stream: str,
        progress: Progress,
        reason: str,
        message: str,
    ) -> None:
        """Say Stalled (reason, message) and stop until the spec changes."""
        await self._status(obj, spec, stream, progress, stalled=(reason, message))
        if message != self.said:
            self.said = message
            self._event("Warning", reason, message)
        raise _Stop(POLL_SECONDS, obj["metadata"].get("generation"))

    async def _not_ready(
        self, obj: Mapping[str, Any], reason: str, message: str, delay: float | None
    ) -> _Stop:
        status = obj.get("status") or {}
        generation = obj["metadata"].get("generation")
        patch = {
            "message": message,
            "observedGeneration": generation,
            "conditions": [
                updated_condition(
                    "Ready",
                    "False",
                    reason,
                    message,
                    generation,
                    status.get("conditions"),
                    now_rfc3339(),
                ).to_status()
            ],
        }
        await self.runtime.patch_status(CONSUMER, self.ref.namespace, self.ref.name, patch)
        self.last_status = None
        if message != self.said:
            self.said = message
            self._event("Warning", reason, message)
        if delay is None:  # Invalid: only a change of the spec helps
            return _Stop(POLL_SECONDS, generation)
        return _Stop(delay)

    def _event(self, type_: str, reason: str, message: str) -> None:
        message = one_line(message)
        queue = self.runtime.event_queue
        if queue is None or not queue(self.body, type_, reason, message):
            self.runtime.post_event(self.body, type_, reason, message)


def _add(progress: Progress, tally: Tally) -> None:
    progress.processed += tally.processed
    progress.failed += tally.failed
    progress.dead_lettered += tally.dead_lettered
    progress.last_error = tally.last_error or progress.last_error


def _with(progress: Progress, tally: Tally) -> Progress:
    shown = replace(progress)
    _add(shown, tally)
    return shown
