"""Views materialized in this process: each View it serves follows its source's durable
stream into its own SQLite file, and answers queries from it.

Every process that serves queries (the endpoint; the operator, for `view` steps) keeps its
own copy under its state directory, so reads scale with replicas and no database is
shared. A View's rows for one spec (`engine.views.Plan.digest`) are one `Generation`: a
file, a worker thread that does all of that file's SQLite work (so the event loop never
waits on SQLite), and a task following the stream:

- A new file starts from the EntityType's snapshots (`store.views.entity_snapshots`, read
  at one revision R) and follows the type's stream from the oldest item it still holds:
  items up to a snapshot's version are skipped by version, so a trimmed stream loses
  nothing and an entity whose snapshot predates typed snapshots is still found; a View
  over runs reads its template's stream from the start.
- A file that exists resumes after its stored offset (minus one revision: the last
  revision is read again, and its items are skipped by version, see `view_db`), first
  dropping the rows of sources deleted meanwhile (their deletion is no stream item): for
  entities, those without a snapshot; for runs, those without an item in the stream.
- Each batch of items commits in one SQLite transaction with the offset it reaches.

A changed spec starts a new Generation beside the current one (`Building`, with
progress); queries keep answering from the current one until the new one has caught up
with the stream's head as it was when it started, then it replaces it and the old file is
deleted.

Read-your-writes: `query(min_offset=N)` waits (bounded) until the rows include every
stream item up to etcd revision N -- the View has applied an item at N or later, or has
applied everything its stream holds now.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aetcd

from kurable.engine.views import Plan, ViewError, bind, plan, problems
from kurable.store import keys, streams
from kurable.store import views as store

from .view_db import DEFAULT_ROW_CAP, Change, Page, ViewDatabase, check

log = logging.getLogger(__name__)
T = TypeVar("T")

BATCH = 512
"""Stream items applied in one SQLite transaction at most."""
FIRST_BUILD_SECONDS = 30.0
"""How long a query waits for a View's first generation in this process to be built."""
MIN_OFFSET_SECONDS = 10.0
"""How long a query given `minOffset` waits for the View to apply it."""


class ViewUnavailable(Exception):
    """The View cannot answer yet (still building, or behind `minOffset` after the wait);
    ask again."""


@dataclass(frozen=True)
class ViewState:
    """What the status shows: phase (Ready, Building), offset, lag, rows, progress."""

    phase: str
    offset: int
    lag: int
    rows: int
    message: str = ""
    failed: int = 0
    """Sources without a row because an expression failed on them."""
    problem: str = ""
    """The first of those failures (`<entity|run> <name>: <what failed>`)."""


def verdict(namespace: str, name: str, spec: Mapping[str, Any]) -> tuple[Plan, list[ViewError]]:
    """The View's plan and every problem of its expressions and queries (empty: valid)."""
    view = plan(namespace, name, spec)
    found = problems(view)
    if not found:
        found = check(view)
    return view, found


def stream_of(prefix: str, view: Plan) -> str:
    """The etcd prefix of the stream a View reads."""
    if view.source_kind == "entities":
        return keys.type_events(prefix, view.namespace, view.source_name)
    return keys.template_changes(prefix, view.namespace, view.source_name)


_Queued = tuple[Change, int] | BaseException
"""A change and the stream offset it reaches (0: none), or what stopped a pump."""


class Generation:
    """One spec's rows of one View: a file, its thread, the task following the stream."""

    def __init__(self, etcd: aetcd.Client, prefix: str, view: Plan, path: Path) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.view = view
        self.path = path
        self.stream = stream_of(prefix, view)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"view-{view.name}")
        self._db: ViewDatabase | None = None
        self.applied = 0
        self.target = 0
        """The stream's head when this generation started: built once applied."""
        self.built = asyncio.Event()
        self.progress = asyncio.Condition()
        self.failures: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on this generation's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"view {self.view.name}")

    async def close(self, delete: bool = False) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._db is not None:
            await self.call(self._db.close)
        self._pool.shutdown(wait=True)
        if delete:
            await asyncio.to_thread(_delete, self.path)

    @property
    def db(self) -> ViewDatabase:
        assert self._db is not None
        return self._db

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("view %s/%s failed; again in 1s", self.view.namespace, self.view.name)
                await asyncio.sleep(1)

    async def _follow(self) -> None:
        if self._db is None:
            self._db = await self.call(ViewDatabase, self.view, self.path)
        db = self._db
        offset = await self.call(db.offset)
        built = await self.call(db.built)
        self.target = 0 if built else await streams.head(self.etcd, self.stream)
        # Resume: read the last revision again (its items are skipped by version).
        after = max(0, offset - 1)
        self.target = max(self.target, offset)
        queue: asyncio.Queue[_Queued] = asyncio.Queue(maxsize=4 * BATCH)
        pumps = [asyncio.create_task(self._pump(queue, after))]
        if self.view.source_kind == "entities":
            # The snapshots at R (skipped by version where the rows are newer), then each
            # Entity created after R: an entity has a row from its creation, not only from
            # its first event. A fresh file then reads the stream from its oldest item
            # still kept (items up to a snapshot's version skipped), so a trimmed stream
            # loses nothing and an entity whose snapshot predates typed snapshots is found.
            # Rows of entities forgotten while no process followed this file (their
            # snapshot is gone at R, and the deletion lies before R) go in the same
            # transaction.
            read = await store.entity_snapshots(
                self.etcd, self.prefix, self.view.namespace, self.view.source_name
            )
            found = [Change(uid, read.revision, value) for uid, value in read.found]
            await self._apply(found, offset, retain=read.present)
            pumps.append(asyncio.create_task(self._pump_created(queue, read.revision)))
        elif offset:
            # A run's part of the stream goes with its journal: the runs deleted while no
            # process followed this file are those with no item left.
            present = await streams.sources(self.etcd, self.stream)
            await self._apply([], offset, retain=present)
        self.applied = offset
        await self._check_built()
        try:
            while True:
                batch = [await queue.get()]
                while len(batch) < BATCH and not queue.empty():
                    batch.append(queue.get_nowait())
                changes: list[Change] = []
                reached = self.applied
                for queued in batch:
                    if isinstance(queued, BaseException):
                        raise queued
                    change, stream_offset = queued
                    changes.append(change)
                    reached = max(reached, stream_offset)
                await self._apply(changes, reached)
                await self._check_built()
        finally:
            for pump in pumps:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await pump

    async def _pump(self, queue: asyncio.Queue[_Queued], after: int) -> None:
        """The source's stream, as changes with the offset each reaches (a deletion
        reaches none: `follow` reports it out of the offsets' order)."""
        try:
            async for item in streams.follow(self.etcd, self.stream, after):
                if item.deleted or item.value is not None:
                    change = Change(self._source_key(item.key), item.offset, item.value)
                    await queue.put((change, 0 if item.deleted else item.offset))
        except Exception as e:
            await queue.put(e)

    async def _pump_created(self, queue: asyncio.Queue[_Queued], after: int) -> None:
        """Entities of the type created (their first snapshot, version 0) or forgotten
        (their snapshot deleted) after revision `after`; they move no stream offset."""
        ns, entity_type = self.view.namespace, self.view.source_name
        try:
            watched = store.entities_of(self.prefix, ns)
            async for item in streams.follow(self.etcd, watched, after):
                if item.deleted:
                    found = store.snapshot_source(self.prefix, ns, entity_type, item.key, None)
                    if found is not None:
                        await queue.put((Change(found[0], item.offset, None), 0))
                    continue
                if not item.key.endswith("/snapshot") or item.value is None:
                    continue
                if item.value.get("version", 0) != 0:
                    continue  # a later snapshot: its events come through the stream
                raw = json.dumps(item.value).encode()
                found = store.snapshot_source(self.prefix, ns, entity_type, item.key, raw)
                if found is not None:
                    await queue.put((Change(found[0], item.offset, found[1]), 0))
        except Exception as e:
            await queue.put(e)

    def _source_key(self, key: str) -> str:
        return key[len(self.stream) :].split("/", 1)[0]

    async def _apply(
        self, changes: list[Change], offset: int, retain: frozenset[str] | None = None
    ) -> None:
        failed = await self.call(self.db.apply, changes, offset, retain)
        if failed:
            log.warning("view %s: %s", self.view.name, "; ".join(failed[:5]))
            self.failures = (self.failures + failed)[-10:]
        async with self.progress:
            self.applied = offset
            self.progress.notify_all()

    async def _check_built(self) -> None:
        if not self.built.is_set() and self.applied >= self.target:
            await self.call(self.db.mark_built)
            self.built.set()

    async def wait_for(self, min_offset: int, seconds: float) -> None:
        """Return once the rows include every stream item up to `min_offset`; raise
        ViewUnavailable after `seconds`."""
        deadline = time.monotonic() + seconds
        while self.applied < min_offset:
            head = await streams.head(self.etcd, self.stream)
            if self.applied >= head:
                return  # nothing of this stream is left up to min_offset (it is committed)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ViewUnavailable(
                    f"view {self.view.name} has applied offset {self.applied}, not yet "
                    f"{min_offset}; ask again"
                )
            async with self.progress:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.progress.wait(), min(remaining, 0.5))

    async def state(self) -> ViewState:
        lag = await streams.lag(self.etcd, self.stream, self.applied)
        rows, (failed, problem) = 0, (0, "")
        if self._db is not None:
            rows = await self.call(self.db.rows)
            failed, problem = await self.call(self.db.failures)
        phase = "Ready" if self.built.is_set() else "Building"
        return ViewState(phase, self.applied, lag, rows, failed=failed, problem=problem)


def _delete(path: Path) -> None:
    """Delete a database file and SQLite's files beside it."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class Replica:
    """One View in this process: the generation answering queries, and the one being built
    for a changed spec."""

    def __init__(self, current: Generation) -> None:
        self.current = current
        self.next: Generation | None = None
        self._switch: asyncio.Task[None] | None = None


class Views:
    """Every View this process serves, materialized under `state_dir`."""

    def __init__(self, etcd: aetcd.Client, prefix: str, state_dir: Path | None) -> None:
        """`state_dir` None: a new temporary directory (the copies are rebuilt each start)."""
        self.etcd = etcd
        self.prefix = prefix
        self.state_dir = Path(state_dir or tempfile.mkdtemp(prefix="kurable-views-"))
        self._replicas: dict[tuple[str, str], Replica] = {}
        self._lock = asyncio.Lock()

    def _generation(self, view: Plan) -> Generation:
        path = self.state_dir / view.namespace / f"{view.name}-{view.digest}.sqlite"
        generation = Generation(self.etcd, self.prefix, view, path)
        generation.start()
        return generation

    async def serve(self, view: Plan) -> Replica:
        """Materialize `view` (a valid plan) here: start it, or, when its rows' spec
        changed, build the new generation beside the current one and switch when built.
        The queries of the current generation follow `view` at once (they do not change
        the rows)."""
        key = (view.namespace, view.name)
        async with self._lock:
            replica = self._replicas.get(key)
            if replica is None:
                replica = Replica(self._generation(view))
                self._replicas[key] = replica
                await asyncio.to_thread(self._drop_stale, view)
                return replica
            if replica.current.view.digest == view.digest:
                replica.current.view = view
                if replica.next is not None:
                    await replica.next.close(delete=True)
                    replica.next = None
                return replica
            if replica.next is not None and replica.next.view.digest == view.digest:
                replica.next.view = view
                return replica
            if replica.next is not None:
                await replica.next.close(delete=True)
            replica.next = self._generation(view)
            replica._switch = asyncio.create_task(self._switch_when_built(replica, replica.next))
            return replica

    async def _switch_when_built(self, replica: Replica, generation: Generation) -> None:
        await generation.built.wait()
        async with self._lock:
            if replica.next is not generation:
                return
            old, replica.current, replica.next = replica.current, generation, None
        await old.close(delete=True)

    def _drop_stale(self, view: Plan) -> None:
        """Delete this View's files of other specs (left by a previous run of the process)."""
        folder = self.state_dir / view.namespace
        if not folder.is_dir():
            return
        keep = f"{view.name}-{view.digest}.sqlite"
        for path in folder.glob(f"{view.name}-*.sqlite*"):
            stem = path.name.split(".sqlite")[0]
            if stem.rsplit("-", 1)[0] == view.name and not path.name.startswith(keep):
                path.unlink(missing_ok=True)

    async def forget(self, namespace: str, name: str) -> None:
        """Stop serving a View and delete its files (the View was deleted)."""
        async with self._lock:
            replica = self._replicas.pop((namespace, name), None)
        if replica is not None:
            if replica.next is not None:
                await replica.next.close(delete=True)
            await replica.current.close(delete=True)

    def replica(self, namespace: str, name: str) -> Replica | None:
        return self._replicas.get((namespace, name))

    async def state(self, namespace: str, name: str) -> ViewState | None:
        """The View's state here (Building while a changed spec builds)."""
        replica = self._replicas.get((namespace, name))
        if replica is None:
            return None
        current = await replica.current.state()
        building = replica.next
        if building is None or not replica.current.built.is_set():
            return current
        target = max(building.target, 1)
        done = min(100, int(100 * building.applied / target)) if building.target else 0
        return ViewState(
            "Building",
            current.offset,
            current.lag,
            current.rows,
            f"building the changed spec: offset {building.applied} of {building.target} "
            f"({done}%); queries answer from the previous spec",
            failed=current.failed,
            problem=current.problem,
        )

    async def query(
        self,
        view: Plan,
        query: str,
        params: Mapping[str, Any],
        skip: int = 0,
        cap: int = DEFAULT_ROW_CAP,
        min_offset: int = 0,
    ) -> Page:
        """One page of `query` of `view` (served here from now on). Raises ViewError
        (`params.<name>`, `query`) for a caller's mistake, ViewUnavailable when the View
        is not built yet or has not applied `min_offset` in time."""
        replica = await self.serve(view)
        generation = replica.current
        named = generation.view.queries.get(query)
        if named is None:
            shown = ", ".join(sorted(generation.view.queries))
            raise ViewError("query", f"view {view.name} has no query {query!r} ({shown})")
        bound = bind(named, params)
        try:
            await asyncio.wait_for(generation.built.wait(), FIRST_BUILD_SECONDS)
        except TimeoutError:
            raise ViewUnavailable(f"view {view.name} is still being built; ask again") from None
        if min_offset:
            await generation.wait_for(min_offset, MIN_OFFSET_SECONDS)
        return await generation.call(generation.db.query, named, bound, skip, cap)

    async def close(self) -> None:
        for key in list(self._replicas):
            replica = self._replicas.pop(key)
            if replica.next is not None:
                await replica.next.close()
            await replica.current.close()
