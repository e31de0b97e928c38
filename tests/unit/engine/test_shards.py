"""Rendezvous hashing: every member computes the same owner, shares are even, and a
change of members moves only the runs it must."""

from __future__ import annotations

import hashlib
import uuid
from collections import Counter

from kurable.engine.shards import member_of, owner_of, weight

UIDS = [str(uuid.UUID(int=n * 7919 + 1)) for n in range(6000)]


def test_the_owner_is_the_same_whatever_order_the_members_are_listed_in() -> None:
    members = ["pod-a", "pod-b", "pod-c"]
    for uid in UIDS[:500]:
        assert owner_of(uid, members) == owner_of(uid, reversed(members)) in members


def test_the_weight_is_stable_across_processes() -> None:
    # BLAKE2b of "pod-a\0run": a fixed value, unlike Python's salted hash().
    digest = hashlib.blake2b(b"pod-a\0run", digest_size=8).digest()
    assert weight("pod-a", "run") == int.from_bytes(digest, "big")
    assert weight("pod-a", "run") != weight("pod-b", "run")


def test_runs_spread_evenly_over_the_members() -> None:
    members = ["pod-a", "pod-b", "pod-c"]
    shares = Counter(owner_of(uid, members) for uid in UIDS)
    assert set(shares) == set(members)
    # 6000 runs over 3: each near 2000 (a binomial's deviation is about 37).
    assert all(1800 < n < 2200 for n in shares.values()), shares


def test_a_leaving_member_moves_only_its_own_runs() -> None:
    before = ["pod-a", "pod-b", "pod-c"]
    after = ["pod-a", "pod-c"]
    moved = [uid for uid in UIDS if owner_of(uid, before) != owner_of(uid, after)]
    assert moved and all(owner_of(uid, before) == "pod-b" for uid in moved)
    assert len(moved) == sum(1 for uid in UIDS if owner_of(uid, before) == "pod-b")


def test_a_joining_member_takes_about_its_share_and_only_moves_runs_to_itself() -> None:
    before = ["pod-a", "pod-b", "pod-c"]
    after = [*before, "pod-d"]
    moved = [uid for uid in UIDS if owner_of(uid, before) != owner_of(uid, after)]
    assert all(owner_of(uid, after) == "pod-d" for uid in moved)
    assert 1300 < len(moved) < 1700  # about a quarter of 6000


def test_no_members_no_owner_and_one_member_owns_everything() -> None:
    assert owner_of("run", []) is None
    assert {owner_of(uid, ["solo"]) for uid in UIDS[:100]} == {"solo"}


def test_a_previous_versions_per_incarnation_key_is_no_member() -> None:
    assert member_of("pod-a") == "pod-a"
    assert member_of("host-12-ab12/0f0f0f0f") is None
    assert member_of("") is None
