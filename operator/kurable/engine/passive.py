"""Passive runs: what wakes a run that holds no task, and when its status is written.

A run that waits for a signal, a timer or a change of its spec needs no task of its
own: the executor parks it (a uid, the time to wake it at, and what of its object it
decided on) and drives it again when that time comes or its object changes in a way
that may unblock it (Akka's passivation). Status-only changes (the echo of the run's
own status patch) do not wake it.

Times are epoch seconds or monotonic seconds, passed in; nothing here does I/O.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .journal import parse_time

SIGNAL_ANNOTATION = "kurable.dev/signal."
"""The prefix of signal annotations (kurable.engine.signals)."""


def wake_time(until: datetime | None) -> float | None:
    """The epoch second a run waiting until `until` (a decision's `Wait.until`) must be
    driven again; None: only when its object changes."""
    return None if until is None else until.timestamp()


def wake_fingerprint(obj: Mapping[str, Any]) -> int:
    """What of a Workflow object may unblock a parked run: its spec (its `generation`,
    for `suspend` and `cancel`), its signal annotations, its deletion. Equal fingerprints:
    the change (e.g. a status patch) cannot unblock it."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    signals = tuple(
        sorted((k, str(v)) for k, v in annotations.items() if k.startswith(SIGNAL_ANNOTATION))
    )
    return hash((meta.get("generation"), signals, meta.get("deletionTimestamp")))


def expiry_time(ttl_seconds: int | None, finished_at: str | None) -> float | None:
    """The epoch second a finished run is deleted at (`ttlSecondsAfterFinished` after
    `finishedAt`, RFC 3339); None when it has no TTL or has not finished."""
    if ttl_seconds is None or not finished_at:
        return None
    return parse_time(finished_at).timestamp() + ttl_seconds


def parks(wait_seconds: float | None, acting: bool, min_seconds: float) -> bool:
    """Whether a run told to wait `wait_seconds` (None: for a change outside) returns
    from its task: only when no action of it is in flight (their outcomes arrive in
    the task) and the wait is long enough (`min_seconds`) to be worth a journal read
    when it is driven again."""
    if acting:
        return False
    return wait_seconds is None or wait_seconds >= min_seconds


def status_write_delay(since_last_write: float, window: float, settled: bool) -> float:
    """Seconds to wait before writing a run's status (coalescing writes while steps
    commit back to back). `since_last_write`: seconds since its last status write (or
    since the run began to be driven here, before its first); `window`: the coalescing
    window (`coalesce_seconds`); `settled`: the run finished or waits for something
    outside (a signal, a timer), so its status is written at once: nothing would
    follow to carry it. A fast run thus writes one status: its final one."""
    if settled:
        return 0.0
    return max(0.0, window - since_last_write)


class Timers:
    """When to do something for each of many keys (a uid): one heap for all, at most
    one time per key (setting it again replaces it). Removal is lazy: a heap entry
    that no longer matches its key's time is skipped when it comes up."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, key: object) -> bool:
        return key in self._at

    def set(self, key: str, at: float) -> None:
        """Do something for `key` at `at` (replacing an earlier time for it)."""
        if self._at.get(key) == at:
            return
        self._at[key] = at
        heapq.heappush(self._heap, (at, key))
        if len(self._heap) > 2 * len(self._at) + 64:
            self._compact()

    def discard(self, key: str) -> None:
        """Nothing to do for `key` any more."""
        self._at.pop(key, None)

    def next_at(self) -> float | None:
        """The earliest time set, or None."""
        while self._heap and self._at.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[str]:
        """The keys whose time is at or before `now`, earliest first; they are removed."""
        keys: list[str] = []
        while (at := self.next_at()) is not None and at <= now:
            _, key = heapq.heappop(self._heap)
            del self._at[key]
            keys.append(key)
        return keys

    def _compact(self) -> None:
        self._heap = [(at, key) for key, at in self._at.items()]
        heapq.heapify(self._heap)
