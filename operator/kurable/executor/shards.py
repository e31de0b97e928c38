"""Replicas that share the runs: live membership from etcd, ownership by rendezvous
hashing (kurable.engine.shards), and what to do when the members change.

Every executor keeps `executors/<slot>` on its lease (kurable.store.journal.Fence); the
live slots are the members. `Shards` lists them and watches the prefix, so every
replica sees the same members within moments of a change, and

- `owns(uid)` says whether this replica drives run `uid`: the one predicate consulted
  where a run starts being driven (`Drivers.start`, which the watch's events, timers,
  wake-ups and resync's adoption all go through);
- `on_change(hook)` registers a coroutine called after every change of the members,
  with the old and new member sets: the executor's hook (kurable.executor.process) stops
  the runs no longer owned, which hands their owner keys to the new owner (held by it at
  once, even before it drives them), and the new owner starts the runs it owns now
  (`Resync.take_owned`).

This replica always counts itself a member (even while its lease is being granted
again after a pause), so it never drops its runs because of its own lost key; the others
take them over meanwhile only through the fence (the owner's key is gone), and give them
back once its key is back.

With kopf's peering (`--peering`), one replica is active and the others stand by:
sharding is off (`enabled=False`) and `owns` is always true.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import aetcd

from kurable.engine.shards import member_of, owner_of
from kurable.store import keys

log = logging.getLogger("kurable.shards")

MembershipHook = Callable[[frozenset[str], frozenset[str]], Coroutine[Any, Any, None]]
"""Called with (members before, members now) after every change."""

RELIST_SECONDS = 30.0
"""Seconds between two listings of the members besides the watch (a watch that broke
silently is caught within that)."""


class Shards:
    """The members sharing the runs, as this replica sees them."""

    def __init__(self, etcd: aetcd.Client, prefix: str, me: str, enabled: bool = True) -> None:
        self.etcd = etcd
        self.prefix = prefix
        self.me = me
        """This replica's member name (its executor slot)."""
        self.enabled = enabled
        self.members: frozenset[str] = frozenset({me})
        """The live members, this replica included."""
        self.changes = 0
        """How many times the members changed since start."""
        self._hooks: list[MembershipHook] = []
        self._task: asyncio.Task[None] | None = None
        self._hook_tasks: set[asyncio.Task[None]] = set()

    # -- the predicate ---------------------------------------------------------------

    def owns(self, uid: str) -> bool:
        """Whether this replica drives run `uid` (always, with sharding off)."""
        return not self.enabled or owner_of(uid, self.members) == self.me

    def owner(self, uid: str) -> str | None:
        """The member that drives run `uid`."""
        return owner_of(uid, self.members) if self.enabled else self.me

    def on_change(self, hook: MembershipHook) -> None:
        """Call `hook(before, now)` after every change of the members."""
        self._hooks.append(hook)

    # -- membership --------------------------------------------------------------------

    async def start(self) -> None:
        """Read the members once, then follow them in the background."""
        if not self.enabled:
            return
        with contextlib.suppress(Exception):
            await self._list()
        self._task = asyncio.create_task(self._follow(), name="kurable-shards")

    async def stop(self) -> None:
        """Stop following the members."""
        for task in (self._task, *self._hook_tasks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _list(self) -> int:
        """Read the members; return the etcd revision read at."""
        listing = await self.etcd.get_prefix(keys.executors(self.prefix).encode(), keys_only=True)
        start = len(keys.executors(self.prefix).encode())
        found = {member_of(kv.key[start:].decode()) for kv in listing}
        self._set(frozenset(m for m in found if m is not None) | {self.me})
        return int(listing.header.revision)

    async def _follow(self) -> None:
        """List, then watch the prefix; any event (or RELIST_SECONDS) lists again."""
        while True:
            watch = None
            reader: asyncio.Task[None] | None = None
            try:
                revision = await self._list()
                watch = await self.etcd.watch_prefix(
                    keys.executors(self.prefix).encode(), start_revision=revision + 1
                )
                event = asyncio.Event()
                reader = asyncio.create_task(_read(watch, event), name="kurable-shards-watch")
                while not reader.done():
                    # Waiting on the event (never on the watch itself) may time out safely.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(event.wait(), RELIST_SECONDS)
                    event.clear()
                    await self._list()
                reader.result()  # the watch ended: say why, then start over
                raise ConnectionError("the watch of the executors ended")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning(
                    "could not follow the executors (%s: %s); again in 1s", type(e).__name__, e
                )
                await asyncio.sleep(1.0)
            finally:
                if reader is not None:
                    reader.cancel()
                if watch is not None:
                    with contextlib.suppress(Exception):
                        await watch.cancel()

    def _set(self, members: frozenset[str]) -> None:
        if members == self.members:
            return
        before, self.members = self.members, members
        self.changes += 1
        log.info(
            "members: %s (were %s); this replica is %s",
            ", ".join(sorted(members)),
            ", ".join(sorted(before)),
            self.me,
        )
        for hook in self._hooks:
            task = asyncio.create_task(hook(before, members), name="kurable-shards-change")
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_done)

    def _hook_done(self, task: asyncio.Task[None]) -> None:
        self._hook_tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("a membership hook failed: %r", task.exception())


async def _read(watch: Any, event: asyncio.Event) -> None:
    """Set `event` on every event of `watch`, until it ends."""
    async for _ in watch:
        event.set()
