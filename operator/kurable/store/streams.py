"""Reading durable streams: every key under one etcd prefix, in mod-revision order.

A stream's order is etcd's: an item's offset is the mod revision of its put, so items
written by one transaction share an offset (an entity command's events). Readers keep an
offset and ask for what came after it; `read` never splits the items of one revision
across pages, so "everything after offset N" is always exact. Streams in Kurable: the
per-type entity events (`keys.type_events`), the per-template run changes
(`keys.template_changes`) and topics (`keys.topic_messages`).

etcd cannot page a range in mod-revision order cheaply: a range filtered or sorted by
revision reads the whole prefix on the server whatever its limit, so paging a backlog with
`read` costs O(items x pages). A `Cursor` reads a backlog in one pass instead (key-ordered
pages at one revision, which etcd serves from its index, sorted here), then only what came
after that revision; `follow` catches up through one.

Items are immutable once written (a stream only grows, and loses whole items when they are
deleted: an entity or run forgotten, a topic trimmed); `read` sees the items present,
`follow` also reports deletions it watches.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aetcd
from aetcd import exceptions as etcd_errors
from aetcd import rpc

from . import keys
from .etcd import raw_range

log = logging.getLogger(__name__)

PAGE = 256
"""Items `follow` takes from its cursor at a time."""

SCAN_PAGE = 512
"""Keys per range request while a cursor scans a prefix (each a key-ordered page that etcd
serves from its index)."""

BUFFER = 8192
"""Items a cursor keeps from one scan (whole revisions: a larger revision is kept whole);
the rest of a larger backlog is read by the next scan."""

RETRY_SECONDS = 1.0
"""How long `follow` waits before reading again after etcd failed."""


@dataclass(frozen=True)
class StreamItem:
    """One item of a stream."""

    offset: int
    """The mod revision of the item's put (of its deletion, for a deleted item)."""
    key: str
    """The item's full etcd key."""
    value: dict[str, Any] | None
    """The item's JSON; None for a deletion, or a value that is not a JSON object."""
    deleted: bool = False
    """The item was deleted (reported by `follow` only)."""


def _item(kv: Any, deleted: bool = False) -> StreamItem:
    value: Any = None
    if not deleted:
        try:
            value = json.loads(kv.value)
        except ValueError:
            value = None
    return StreamItem(
        offset=int(kv.mod_revision),
        key=kv.key.decode(),
        value=value if isinstance(value, dict) else None,
        deleted=deleted,
    )


async def read(client: aetcd.Client, prefix: str, after: int, limit: int) -> list[StreamItem]:
    """The items of the stream `prefix` with an offset above `after`, ascending (one
    revision's items by key), at most `limit` of them (at least 1) -- but never part of one
    revision: when the page would end inside a revision, the items of that revision are
    left for the next page, unless they are all the page holds (then all of that revision's
    items are returned, even beyond `limit`). One range over the whole prefix per call: to
    read a backlog page by page, use a `Cursor`."""
    limit = max(1, limit)
    request = rpc.RangeRequest(
        key=prefix.encode(),
        range_end=keys.range_end(prefix).encode(),
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.MOD,
        min_mod_revision=after + 1,
        limit=limit + 1,
    )
    kvs = sorted((await raw_range(client, request)).kvs, key=_order)
    if len(kvs) <= limit:
        return [_item(kv) for kv in kvs]
    last = int(kvs[limit - 1].mod_revision)
    if int(kvs[0].mod_revision) < last or int(kvs[limit].mod_revision) > last:
        return _whole([_item(kv) for kv in kvs], limit)
    # One revision holds more items than `limit`: return all of it.
    request = rpc.RangeRequest(
        key=prefix.encode(),
        range_end=keys.range_end(prefix).encode(),
        min_mod_revision=last,
        max_mod_revision=last,
    )
    return [_item(kv) for kv in (await raw_range(client, request)).kvs]


class Cursor:
    """Reads one stream in offset order, each backlog in one pass over the prefix.

    `read_page(after, limit)` answers like the module's `read` (and gives the revision it
    read at), from a buffer: the first call (or one whose `after` falls outside the buffer)
    scans the prefix at one etcd revision R in key-ordered pages and keeps the items after
    `after` (at most `BUFFER` of them, whole revisions), sorted by offset; once the buffer
    is served, a call reads only the items written after R (one range filtered by mod
    revision, which etcd evaluates over the prefix but sends only the new items), or scans
    again when the last scan was cut at `BUFFER`. Reading a backlog of n items from a
    prefix of N costs O(N + n) rather than O(N x n / limit). Not safe for concurrent use
    by several tasks.
    """

    def __init__(self, client: aetcd.Client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self._items: list[StreamItem] = []
        """What the last read left, in offset order."""
        self._after = -1
        """The offset `_items` starts after (-1: nothing read yet)."""
        self._complete = 0
        """Every item with an offset in (`_after`, `_complete`] is (or was) in `_items`."""
        self._revision = 0
        """The etcd revision of the last read; `_complete` equals it unless the read was
        cut at BUFFER."""

    async def read_page(self, after: int, limit: int) -> tuple[list[StreamItem], int]:
        """The items after `after` (at most `limit`, at least 1, whole revisions, as the
        module's `read`) and the etcd revision the buffer was read at: with no items, the
        stream held nothing after `after` at that revision (watch from the one after it)."""
        if self._after < 0 or after < self._after:
            await self._scan(after)
        elif not self._items or self._items[-1].offset <= after:
            # The buffer is served: what comes next is past `_complete`.
            if self._complete == self._revision:
                await self._newer(after)
            else:
                await self._scan(after)
        position = bisect.bisect_right(self._items, after, key=lambda item: item.offset)
        items = self._items[position:]
        self._items, self._after = items, after
        return _whole(items, max(1, limit)), self._revision

    async def _scan(self, after: int) -> None:
        """Buffer the items after `after`: one pass over the prefix at one revision."""
        start, end = self.prefix.encode(), keys.range_end(self.prefix).encode()
        revision, cutoff = 0, None
        kept: list[Any] = []
        while True:
            request = rpc.RangeRequest(key=start, range_end=end, limit=SCAN_PAGE, revision=revision)
            response = await raw_range(self.client, request)
            revision = revision or int(response.header.revision)
            for kv in response.kvs:
                offset = int(kv.mod_revision)
                if offset > after and (cutoff is None or offset <= cutoff):
                    kept.append(kv)
            if len(kept) > 2 * BUFFER:
                kept, cutoff = _bounded(kept)
            if not response.more or not response.kvs:
                break
            start = bytes(response.kvs[-1].key) + b"\0"
        kept, cut = _bounded(kept)
        cutoff = cut if cut is not None else cutoff
        self._keep(kept, after, revision, cutoff)

    async def _newer(self, after: int) -> None:
        """Buffer the items written after the last read's revision (a scan, should that
        range fail, e.g. on a response beyond the client's message size)."""
        request = rpc.RangeRequest(
            key=self.prefix.encode(),
            range_end=keys.range_end(self.prefix).encode(),
            min_mod_revision=max(after, self._revision) + 1,
        )
        try:
            response = await raw_range(self.client, request)
        except (asyncio.CancelledError, etcd_errors.ConnectionFailedError):
            raise
        except Exception as e:
            log.info(
                "reading %s after revision %d failed (%s); scanning", self.prefix, self._revision, e
            )
            await self._scan(after)
            return
        kept, cutoff = _bounded(list(response.kvs))
        self._keep(kept, after, int(response.header.revision), cutoff)

    def _keep(self, kvs: list[Any], after: int, revision: int, cutoff: int | None) -> None:
        self._items = [_item(kv) for kv in kvs if int(kv.mod_revision) > after]
        self._after, self._revision = after, revision
        self._complete = revision if cutoff is None else cutoff


def _order(kv: Any) -> tuple[int, bytes]:
    """Stream order: by offset, the items of one revision by key (etcd's sort by mod
    revision leaves their order open)."""
    return int(kv.mod_revision), bytes(kv.key)


def _bounded(kvs: list[Any]) -> tuple[list[Any], int | None]:
    """`kvs` sorted by (offset, key) and cut after BUFFER items, keeping the last revision
    whole; and the last offset kept when anything was cut (None when nothing was)."""
    kvs.sort(key=_order)
    if len(kvs) <= BUFFER:
        return kvs, None
    cutoff = int(kvs[BUFFER - 1].mod_revision)
    position = bisect.bisect_right(kvs, cutoff, key=lambda kv: int(kv.mod_revision))
    return kvs[:position], cutoff


def _whole(items: list[StreamItem], limit: int) -> list[StreamItem]:
    """The first `limit` items, without the part of a revision that would be split (all of
    the first revision when it alone is larger than `limit`)."""
    if len(items) <= limit:
        return items
    last = items[limit].offset
    if items[limit - 1].offset < last:
        return items[:limit]
    whole = [item for item in items[:limit] if item.offset < last]
    if whole:
        return whole
    return [item for item in items if item.offset == last]


async def head(client: aetcd.Client, prefix: str) -> int:
    """The newest offset in the stream (0 when it is empty)."""
    request = rpc.RangeRequest(
        key=prefix.encode(),
        range_end=keys.range_end(prefix).encode(),
        sort_order=rpc.RangeRequest.DESCEND,
        sort_target=rpc.RangeRequest.MOD,
        keys_only=True,
        limit=1,
    )
    response = await raw_range(client, request)
    return int(response.kvs[0].mod_revision) if response.kvs else 0


async def first(client: aetcd.Client, prefix: str) -> int:
    """The oldest offset still in the stream (0 when it is empty)."""
    request = rpc.RangeRequest(
        key=prefix.encode(),
        range_end=keys.range_end(prefix).encode(),
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.MOD,
        keys_only=True,
        limit=1,
    )
    response = await raw_range(client, request)
    return int(response.kvs[0].mod_revision) if response.kvs else 0


async def sources(client: aetcd.Client, prefix: str) -> frozenset[str]:
    """The first key segments under `prefix` (for a stream keyed `<source uid>/...`: the
    sources that have items in it now), read keys-only in pages at one revision."""
    end = keys.range_end(prefix).encode()
    key, revision = prefix.encode(), 0
    found: set[str] = set()
    while True:
        request = rpc.RangeRequest(
            key=key, range_end=end, limit=SCAN_PAGE, revision=revision, keys_only=True
        )
        response = await raw_range(client, request)
        revision = revision or int(response.header.revision)
        found.update(kv.key.decode()[len(prefix) :].split("/", 1)[0] for kv in response.kvs)
        if not response.more or not response.kvs:
            return frozenset(found)
        key = response.kvs[-1].key + b"\0"


async def lag(client: aetcd.Client, prefix: str, after: int) -> int:
    """How many items of the stream have an offset above `after` (one keys-only read:
    etcd's count-only range counts the whole range, ignoring min_mod_revision)."""
    request = rpc.RangeRequest(
        key=prefix.encode(),
        range_end=keys.range_end(prefix).encode(),
        min_mod_revision=after + 1,
        keys_only=True,
    )
    response = await raw_range(client, request)
    return len(response.kvs)


async def follow(client: aetcd.Client, prefix: str, after: int) -> AsyncIterator[StreamItem]:
    """Every item after `after`, then each new one as it is written, for ever.

    Catches up through a `Cursor`, then watches from the revision after the last read;
    items are yielded in offset order, deletions (`deleted=True`) as the watch reports
    them. When the watch's revision was compacted, or etcd fails, it reads again from the
    last offset yielded (deletions in that gap are not reported: readers that must drop
    rows re-read what exists). Never blocks the event loop; cancel the iteration to stop.
    """
    offset = after
    cursor = Cursor(client, prefix)
    while True:
        watch = None
        try:
            while True:  # catch up
                items, revision = await cursor.read_page(offset, PAGE)
                for item in items:
                    offset = item.offset
                    yield item
                if not items:
                    break
            watch = await client.watch_prefix(prefix.encode(), start_revision=revision + 1)
            async for event in watch:
                item = _item(event.kv, deleted=event.kind == "DELETE")
                if not item.deleted and item.offset <= offset:
                    continue
                if not item.deleted:
                    offset = item.offset
                yield item
            raise ConnectionError(f"the watch of {prefix} ended")
        except etcd_errors.RevisionCompactedError:
            log.info("the watch of %s fell behind compaction; reading from %d", prefix, offset)
        except (asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as e:
            log.warning("following %s failed (%s: %s); again in 1s", prefix, type(e).__name__, e)
            await asyncio.sleep(RETRY_SECONDS)
        finally:
            if watch is not None:
                with contextlib.suppress(Exception):  # the connection went: nothing to cancel
                    await watch.cancel()
