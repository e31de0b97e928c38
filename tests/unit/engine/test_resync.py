"""Resync's decisions: which runs to adopt or give up, and when the watch missed something."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import pytest

from kurable.engine.resync import (
    Delivery,
    Listed,
    Memory,
    Review,
    resync_delay,
    review,
    serves,
    specific_namespaces,
    unheld,
)

GRACE = 30.0


def wf(uid: str, rv: str = "1", phase: str | None = None, deleting: bool = False) -> Listed:
    return Listed(uid, "ns", f"wf-{uid}", rv, phase, deleting)


def run(
    listed: Sequence[Listed],
    at: float,
    memory: Memory | None = None,
    driven: Collection[str] = (),
    adopted: Collection[str] = (),
    deliveries: Mapping[str, Delivery] | None = None,
) -> Review:
    return review(
        listed,
        driven=driven,
        adopted=adopted,
        deliveries=deliveries if deliveries is not None else {},
        memory=memory or Memory(),
        listed_at=at,
        grace=GRACE,
    )


def test_listed_reads_the_object() -> None:
    obj = {
        "metadata": {
            "uid": "u1",
            "namespace": "ns",
            "name": "a",
            "resourceVersion": "7",
            "deletionTimestamp": "2026-01-01T00:00:00Z",
        },
        "status": {"phase": "Succeeded"},
    }
    item = Listed.from_object(obj)
    assert item == Listed("u1", "ns", "a", "7", "Succeeded", True)
    assert item.finished
    assert not Listed.from_object({"metadata": {"uid": "u2"}}).finished


# -- adopting ---------------------------------------------------------------------------


def test_an_undriven_unfinished_run_is_adopted_only_after_a_whole_interval() -> None:
    first = run([wf("a")], at=100.0)
    assert first.adopt == []  # a daemon may be starting right now
    second = run([wf("a")], at=100.0 + GRACE, memory=first.memory)
    assert [item.uid for item in second.adopt] == ["a"]


def test_a_run_with_no_phase_yet_counts_as_unfinished() -> None:
    memory = run([wf("a", phase=None)], at=0.0).memory
    assert [i.uid for i in run([wf("a", phase=None)], at=GRACE, memory=memory).adopt] == ["a"]


@pytest.mark.parametrize("phase", ["Succeeded", "Failed", "Cancelled", "Invalid"])
def test_finished_runs_are_never_adopted(phase: str) -> None:
    memory = run([wf("a", phase=phase)], at=0.0).memory
    assert run([wf("a", phase=phase)], at=GRACE, memory=memory).adopt == []
    assert memory.undriven_since == {}


def test_runs_being_deleted_are_not_adopted() -> None:
    memory = run([wf("a", deleting=True)], at=0.0).memory
    assert run([wf("a", deleting=True)], at=GRACE, memory=memory).adopt == []


def test_a_run_driven_here_is_not_adopted_and_its_clock_restarts() -> None:
    memory = run([wf("a", phase="Running")], at=0.0).memory
    driven = run([wf("a", phase="Running")], at=10.0, memory=memory, driven={"a"})
    assert driven.adopt == [] and "a" not in driven.memory.undriven_since
    # Its daemon ended (e.g. kopf stopped it): a whole interval again before adopting.
    again = run([wf("a", phase="Running")], at=20.0, memory=driven.memory)
    assert again.adopt == []
    assert [i.uid for i in run([wf("a")], at=20.0 + GRACE, memory=again.memory).adopt] == ["a"]


def test_adopted_runs_are_abandoned_when_their_object_is_gone_or_being_deleted() -> None:
    listed = [wf("kept", phase="Running"), wf("deleting", deleting=True)]
    result = run(listed, at=0.0, driven={"kept", "deleting", "gone", "daemon"},
                 adopted={"kept", "deleting", "gone"})  # fmt: skip
    assert sorted(result.abandon) == ["deleting", "gone"]


# -- who holds a run in etcd ------------------------------------------------------------

FENCE = "pod-a/1234"


@pytest.mark.parametrize(
    ("holder", "adopt"),
    [
        (None, True),  # nobody
        ("", True),
        (FENCE, True),  # this executor, with no task driving it
        ("pod-a/0000", True),  # an earlier incarnation of this pod: Fence.claim takes over
        ("pod-b/5678", False),  # another live executor drives it
    ],
)
def test_only_runs_no_other_live_executor_holds_are_adopted(
    holder: str | None, adopt: bool
) -> None:
    assert unheld([wf("a")], {"a": holder}, FENCE) == ([wf("a")] if adopt else [])


# -- the watch's health -----------------------------------------------------------------


def test_an_object_the_watch_never_delivered_is_missed_after_a_whole_interval() -> None:
    first = run([wf("a", "5")], at=0.0)
    assert first.missed == []
    second = run([wf("a", "5")], at=GRACE, memory=first.memory)
    (missed,) = second.missed
    assert (missed.listed.uid, missed.delivered, missed.lag) == ("a", None, GRACE)
    assert "never delivered" in missed.describe()


def test_an_object_delivered_at_the_listed_version_is_in_sync() -> None:
    deliveries = {"a": Delivery("5", at=-100.0)}
    first = run([wf("a", "5")], at=0.0, deliveries=deliveries)
    second = run([wf("a", "5")], at=GRACE, memory=first.memory, deliveries=deliveries)
    assert second.missed == [] and second.memory.behind_since == {}


def test_an_older_version_delivered_for_longer_than_an_interval_is_missed() -> None:
    deliveries = {"a": Delivery("4", at=-1.0)}
    first = run([wf("a", "5")], at=0.0, deliveries=deliveries)
    assert first.missed == []  # the watch delivers a change a moment after the API shows it
    second = run([wf("a", "6")], at=GRACE, memory=first.memory, deliveries=deliveries)
    (missed,) = second.missed
    assert missed.delivered == "4"
    assert "delivered resourceVersion 4 last" in missed.describe()


def test_a_watch_that_keeps_delivering_is_never_missed_though_always_a_step_behind() -> None:
    memory = Memory()
    for i in range(5):
        at = i * GRACE
        # Each time, the watch delivered the previous version just after the last listing.
        deliveries = {"a": Delivery(str(i), at=at - GRACE + 1.0)}
        result = run([wf("a", str(i + 1))], at=at, memory=memory, deliveries=deliveries)
        assert result.missed == [], i
        memory = result.memory


def test_objects_no_longer_listed_are_forgotten() -> None:
    memory = run([wf("a")], at=0.0).memory
    assert "a" in memory.behind_since and "a" in memory.undriven_since
    memory = run([], at=1.0, memory=memory).memory
    assert memory == Memory()


# -- namespaces -------------------------------------------------------------------------


def test_plain_namespace_names_are_listed_directly() -> None:
    assert specific_namespaces(["b", "a", "a"]) == ["a", "b"]
    assert specific_namespaces(["a", "test-*"]) is None
    assert specific_namespaces(["!kube-system"]) is None


@pytest.mark.parametrize(
    ("namespace", "patterns", "served"),
    [
        ("test-1", ["test-*"], True),
        ("prod", ["test-*"], False),
        ("prod", ["test-*", "prod"], True),
        ("kube-system", ["!kube-*"], False),
        ("default", ["!kube-*"], True),
        # kopf's rules: a later glob re-admits only what the first one admitted.
        ("myapp-pr-123", ["myapp-*, !*-pr-*, *pr-123"], True),
        ("myapp-pr-456", ["myapp-*, !*-pr-*, *pr-123"], False),
        ("otherapp-pr-123", ["myapp-*, !*-pr-*, *pr-123"], False),
        ("otherapp-pr-123", ["!*-pr-*, *pr-123"], True),
    ],
)
def test_namespaces_are_matched_as_kopf_matches_them(
    namespace: str, patterns: list[str], served: bool
) -> None:
    assert serves(namespace, patterns) is served


def test_listings_come_less_often_with_many_runs_so_resync_lists_at_most_its_rate() -> None:
    assert resync_delay(30, 0) == 30
    assert resync_delay(30, 3_000) == 30
    assert resync_delay(30, 10_000) == 100
    assert resync_delay(2, 1_000, rate=100) == 10
