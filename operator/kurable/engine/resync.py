"""Resync: what a periodic listing of Workflows decides, apart from any I/O.

kopf learns about Workflows only from its watch streams. A stream can go silent
without closing (a half-dead TCP connection, a frozen proxy): a run then waits
forever for a signal that has arrived, and a Workflow created meanwhile is never
driven. So the operator also lists its Workflows every few seconds and decides
here, from that listing, what kopf's watch has delivered and what this process
drives:

- which unfinished runs nobody drives, to be adopted by this process (`review`,
  then `unheld` once etcd said who holds them);
- which adopted runs to give up because their object is gone or being deleted;
- whether the watch missed something: an object the API shows and the watch never
  delivered, or delivered at another version, for longer than one interval.

A problem must last one whole interval before it counts: a Workflow created a
moment ago is not driven yet, and the watch delivers a change a moment after the
API shows it. Times are monotonic seconds, passed in.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kurable.engine.journal import TERMINAL_PHASES


@dataclass(frozen=True)
class Listed:
    """One Workflow as the API listed it."""

    uid: str
    namespace: str
    name: str
    resource_version: str
    phase: str | None = None
    deleting: bool = False

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Listed:
        meta = obj.get("metadata") or {}
        return cls(
            uid=meta.get("uid", ""),
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            resource_version=meta.get("resourceVersion", ""),
            phase=(obj.get("status") or {}).get("phase"),
            deleting=bool(meta.get("deletionTimestamp")),
        )

    @property
    def finished(self) -> bool:
        """Status is projected from the journal: a terminal phase means a finished run."""
        return self.phase in TERMINAL_PHASES

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Delivery:
    """The last event kopf's watch delivered for one object."""

    resource_version: str
    at: float


@dataclass(frozen=True)
class Missed:
    """An object the watch did not deliver as the API shows it, for `lag` seconds."""

    listed: Listed
    delivered: str | None
    """The resourceVersion the watch delivered last; None: never delivered."""
    lag: float

    def describe(self) -> str:
        if self.delivered is None:
            seen = "never delivered it"
        else:
            seen = f"delivered resourceVersion {self.delivered} last"
        return (
            f"workflow {self.listed} is at resourceVersion {self.listed.resource_version} "
            f"in the API; the watch {seen} ({self.lag:.0f}s behind)"
        )


@dataclass(frozen=True)
class Memory:
    """What earlier listings saw, to tell a lasting problem from one in flight:
    since when each run was unfinished and undriven, and since when the watch was
    behind on each object (uid -> monotonic seconds)."""

    undriven_since: Mapping[str, float] = field(default_factory=dict)
    behind_since: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Review:
    """What one listing calls for."""

    adopt: list[Listed]
    """Unfinished runs nobody in this process drives, for longer than one interval:
    adopt those that no other live executor holds in etcd (see `unheld`)."""
    abandon: list[str]
    """Runs this process drives or parks whose object is gone or being deleted: stop
    them (and forget the journal of those gone: their DELETED event was missed)."""
    missed: list[Missed]
    """Objects the watch has been behind on for longer than one interval."""
    memory: Memory
    """To pass to the next review."""


def review(
    listed: Sequence[Listed],
    *,
    driven: Collection[str],
    adopted: Collection[str],
    deliveries: Mapping[str, Delivery],
    memory: Memory,
    listed_at: float,
    grace: float,
) -> Review:
    """Decide from one listing, taken at `listed_at`.

    `driven`: uids that this process drives (a task) or parks, before or after the
    listing; `adopted`: those of them to stop when their object is gone or being
    deleted (all of them: no finalizer tells this process of a deletion it missed);
    `deliveries`: what the watch delivered last, per uid.
    """
    present = {item.uid: item for item in listed}
    undriven: dict[str, float] = {}
    adopt: list[Listed] = []
    for item in listed:
        if item.finished or item.deleting or item.uid in driven:
            continue
        since = memory.undriven_since.get(item.uid, listed_at)
        undriven[item.uid] = since
        if listed_at - since >= grace:
            adopt.append(item)
    abandon = [uid for uid in adopted if uid not in present or present[uid].deleting]
    behind: dict[str, float] = {}
    missed: list[Missed] = []
    for item in listed:
        delivery = deliveries.get(item.uid)
        if delivery is not None and delivery.resource_version == item.resource_version:
            continue
        since = memory.behind_since.get(item.uid, listed_at)
        if delivery is not None and delivery.at > since:
            # The watch delivered this object since we first saw it behind: it moves,
            # and the API may just be a step ahead again. Count afresh.
            since = listed_at
        behind[item.uid] = since
        if listed_at - since >= grace:
            missed.append(
                Missed(item, delivery.resource_version if delivery else None, listed_at - since)
            )
    return Review(adopt, abandon, missed, Memory(undriven, behind))


RESYNC_RATE = 100
"""Objects per second that resync lists on average, at most: with many runs, listings come
less often than the configured interval (10,000 runs: every 100 s), so that at rest they
cost the operator and the API server the same share of a core however many runs there
are (bench/scale.py measures it)."""


def resync_delay(interval: float, listed: int, rate: float = RESYNC_RATE) -> float:
    """Seconds from one listing to the next: the configured `interval`, or longer when the
    last listing returned `listed` objects, so that no more than `rate` objects are
    listed per second on average."""
    return max(interval, listed / rate)


def unheld(
    candidates: Iterable[Listed], holders: Mapping[str, str | None], fence_id: str
) -> list[Listed]:
    """The candidates no other live executor holds.

    `holders` maps a uid to its live holder in etcd (None: no owner key, or its
    executor's key is gone: `Fence.holder`), so a holder is alive, unless it is
    this executor itself (`fence_id`, e.g. a driver that ended without releasing it)
    or an earlier incarnation of it (same executor name before the `/`), which
    `Fence.claim` takes over at once.
    """
    executor = fence_id.rpartition("/")[0]
    return [
        c
        for c in candidates
        if not (holder := holders.get(c.uid))
        or holder == fence_id
        or holder.rpartition("/")[0] == executor
    ]


def specific_namespaces(patterns: Sequence[str]) -> list[str] | None:
    """The namespaces themselves when every pattern is a plain name; else None (the
    namespaces must be listed and matched with `serves`)."""
    if any(set(p) & set("*?[!,") for p in patterns):
        return None
    return sorted({p.strip() for p in patterns})


def serves(namespace: str, patterns: Sequence[str]) -> bool:
    """Whether an operator started with `--namespace` `patterns` serves `namespace`.

    The same rules as kopf's (so that resync lists exactly what kopf watches): each
    pattern is comma-separated globs; `!glob` excludes; a pattern that starts with an
    exclusion starts from `*`; a later inclusive glob re-admits only a namespace the
    first glob admitted. A namespace is served if any pattern admits it.
    """
    return any(_matches(namespace, pattern) for pattern in patterns)


def _matches(namespace: str, pattern: str) -> bool:
    globs = [glob.strip() for glob in pattern.split(",")]
    if not globs or globs[0].startswith("!"):
        globs.insert(0, "*")
    matches = first = fnmatch.fnmatchcase(namespace, globs[0])
    for glob in globs[1:]:
        if glob.startswith("!"):
            matches = matches and not fnmatch.fnmatchcase(namespace, glob[1:])
        else:
            matches = matches or (first and fnmatch.fnmatchcase(namespace, glob))
    return matches
