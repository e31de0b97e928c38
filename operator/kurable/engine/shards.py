"""Which live executor drives which run: rendezvous (highest random weight) hashing.

Every executor registers under its lease (`executors/<slot>` in etcd); the live slots are
the members. A run belongs to the member whose hash of (member, run uid) is highest, so:

- every member computes the same owner from the same member set, with no coordination;
- when a member leaves, only its runs move (each to the member that ranked second);
- when a member joins, it takes about 1/(n+1) of the runs, and only those move.

The hash is BLAKE2b (stable across processes and Python versions, unlike `hash()`).
Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(member: str, uid: str) -> int:
    """The rendezvous weight of `member` for run `uid`: a 64-bit unsigned integer."""
    digest = hashlib.blake2b(f"{member}\0{uid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner_of(uid: str, members: Iterable[str]) -> str | None:
    """The member that owns run `uid` (ties, which need a 64-bit collision, go to the
    smaller name); None when there are no members."""
    best: tuple[int, str] | None = None
    for member in members:
        ranked = (weight(member, uid), member)
        if best is None or ranked[0] > best[0] or (ranked[0] == best[0] and member < best[1]):
            best = ranked
    return None if best is None else best[1]


def member_of(key_suffix: str) -> str | None:
    """The member named by an executor key (the part after `executors/`), or None for a
    key that is no member: a previous version's per-incarnation key
    (`executors/<slot>/<incarnation>`)."""
    if not key_suffix or "/" in key_suffix:
        return None
    return key_suffix
