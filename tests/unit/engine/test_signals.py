"""Signal annotations: a resend is a new signal, a redelivery is not, across crashes.

The crash tests drive the rule the way the run driver does (executor.runs: journal the
arrivals, then apply the consumption patch), against a model of the API object that
applies JSON patches atomically, and stop the operator after each of its writes."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from kurable.engine.journal import Signal
from kurable.engine.signals import (
    CONSUMED_ANNOTATION,
    Intake,
    Redelivery,
    consumed_through,
    consumption_patch,
    intake,
)

KEY = "kurable.dev/signal.APPROVE"


def test_a_new_annotation_is_an_arrival() -> None:
    taken = intake({KEY: '{"ok":true}'}, [])
    assert [(a.name, a.payload) for a in taken.arrivals] == [("APPROVE", {"ok": True})]
    assert not taken.redeliveries


def test_a_journaled_annotation_not_yet_removed_is_a_redelivery() -> None:
    taken = intake({KEY: '{"ok": true}'}, [Signal(3, "APPROVE", {"ok": True})])
    assert taken.redeliveries == (Redelivery(KEY, '{"ok": true}', 3),)
    assert not taken.arrivals


def test_the_same_payload_after_its_removal_landed_is_a_new_send() -> None:
    annotations = {KEY: '{"ok":true}', CONSUMED_ANNOTATION: "3"}
    taken = intake(annotations, [Signal(3, "APPROVE", {"ok": True})])
    assert [a.name for a in taken.arrivals] == ["APPROVE"]


def test_a_journal_of_before_consumption_does_not_take_its_annotations_again() -> None:
    # Operators before consumption left the annotation in place and wrote no marker:
    # after an upgrade, the journaled send is recognised and only removed.
    taken = intake({KEY: "{}"}, [Signal(1, "APPROVE", {})])
    assert not taken.arrivals and len(taken.redeliveries) == 1


def test_a_send_through_the_endpoint_is_no_redelivery_of_an_annotation() -> None:
    taken = intake({KEY: "{}"}, [Signal(1, "APPROVE", {}, source="endpoint")])
    assert len(taken.arrivals) == 1


def test_unreadable_annotations_are_removed_without_moving_the_marker() -> None:
    taken = intake({KEY: "{not json", CONSUMED_ANNOTATION: "4"}, [])
    assert taken.unreadable and "not JSON" in taken.unreadable[0].problem
    assert consumption_patch(taken) == [
        {
            "op": "test",
            "path": "/metadata/annotations/kurable.dev~1signal.APPROVE",
            "value": "{not json",
        },
        {"op": "remove", "path": "/metadata/annotations/kurable.dev~1signal.APPROVE"},
    ]


def test_the_patch_tests_the_text_removes_it_and_moves_the_marker_forward() -> None:
    taken = Intake(redeliveries=(Redelivery(KEY, "1", 7), Redelivery(KEY + "X", "2", 5)))
    ops = consumption_patch(taken)
    assert ops[-1] == {
        "op": "add",
        "path": "/metadata/annotations/kurable.dev~1signals-consumed",
        "value": "7",
    }
    assert [op["op"] for op in ops[:-1]] == ["test", "remove", "test", "remove"]


def test_the_marker_is_a_number_or_nothing() -> None:
    assert consumed_through({}) == -1
    assert consumed_through({CONSUMED_ANNOTATION: "12"}) == 12
    assert consumed_through({CONSUMED_ANNOTATION: "twelve"}) == -1


# --- crash interleavings ----------------------------------------------------------------


class PatchRefused(Exception):
    pass


class ApiObject:
    """The Workflow's annotations on the API server; a JSON patch applies whole or not."""

    def __init__(self) -> None:
        self.annotations: dict[str, str] = {}

    def patch(self, ops: list[dict[str, Any]]) -> None:
        new = copy.deepcopy(self.annotations)
        for op in ops:
            key = op["path"].removeprefix("/metadata/annotations/")
            key = key.replace("~1", "/").replace("~0", "~")
            if op["op"] == "test":
                if new.get(key) != op["value"]:
                    raise PatchRefused(key)
            elif op["op"] == "remove":
                if key not in new:
                    raise PatchRefused(key)
                del new[key]
            else:
                new[key] = op["value"]
        self.annotations = new


def operator(obj: ApiObject, journal: list[Signal]) -> Iterator[None]:
    """One observation of the run driver; yields after each write (where it may die)."""
    for _ in range(3):
        taken = intake(dict(obj.annotations), journal)
        if taken.idle:
            return
        if taken.arrivals:
            for arrival in taken.arrivals:
                journal.append(Signal(len(journal), arrival.name, arrival.payload))
                yield
            continue
        try:
            obj.patch(consumption_patch(taken))
        except PatchRefused:
            continue
        yield
        return


def run(obj: ApiObject, journal: list[Signal], die_after: int | None = None) -> bool:
    """Run one observation; die after `die_after` writes. True when it died."""
    for writes, _ in enumerate(operator(obj, journal), start=1):
        if die_after is not None and writes >= die_after:
            return True
    return False


SENDS = [("APPROVE", '{"ok":true}'), ("APPROVE", '{"ok":true}'), ("OTHER", "1")]


@pytest.mark.parametrize("send", range(len(SENDS)))
@pytest.mark.parametrize("die_after", [1, 2, 3])
@pytest.mark.parametrize("observations_after", [1, 3])
def test_each_send_is_journaled_once_whatever_write_the_operator_dies_after(
    send: int, die_after: int, observations_after: int
) -> None:
    obj, journal = ApiObject(), []
    for i, (name, text) in enumerate(SENDS):
        obj.annotations.pop(f"kurable.dev/signal.{name}", None)  # the user's removal
        obj.annotations[f"kurable.dev/signal.{name}"] = text
        if i == send:
            run(obj, journal, die_after)
        for _ in range(observations_after):  # the restarted operator, watch events
            run(obj, journal)
        assert not any(k.startswith("kurable.dev/signal.") for k in obj.annotations)
    assert [(s.name, s.payload) for s in journal] == [
        ("APPROVE", {"ok": True}),
        ("APPROVE", {"ok": True}),
        ("OTHER", 1),
    ]


def test_a_rewrite_between_journaling_and_removal_is_a_new_send() -> None:
    obj, journal = ApiObject(), []
    obj.annotations[KEY] = '{"ok":true}'
    assert run(obj, journal, die_after=1)  # journaled, not removed
    obj.annotations[KEY] = '{"ok":false}'  # kubectl annotate --overwrite
    run(obj, journal)
    assert [s.payload for s in journal] == [{"ok": True}, {"ok": False}]
    assert KEY not in obj.annotations


def test_two_signals_sent_together_survive_a_death_between_their_records() -> None:
    obj, journal = ApiObject(), []
    obj.annotations[KEY] = "1"
    obj.annotations["kurable.dev/signal.B"] = "2"
    assert run(obj, journal, die_after=1)
    run(obj, journal)
    run(obj, journal)
    assert sorted((s.name, s.payload) for s in journal) == [("APPROVE", 1), ("B", 2)]
    assert obj.annotations == {CONSUMED_ANNOTATION: "1"}


def test_a_payload_over_the_size_limit_is_unreadable_and_never_journaled() -> None:
    big = '{"blob":"' + "x" * 2000 + '"}'
    taken = intake({KEY: big}, [], max_payload_bytes=1024)
    assert taken.arrivals == ()
    [refused] = taken.unreadable
    assert refused.key == KEY
    assert refused.problem.startswith("the payload of signal APPROVE is 2.0 KiB")
    assert "--max-value-bytes" in refused.problem
    assert intake({KEY: big}, [], max_payload_bytes=4096).arrivals != ()


def test_an_unreadable_signal_is_explained_in_kurables_words() -> None:
    taken = intake({KEY: "approved\nby me"}, [])
    problem = taken.unreadable[0].problem
    assert problem.startswith("the payload 'approved by me' is not JSON; send a JSON value")
    assert "Expecting" not in problem and "line 1 column" not in problem


def test_an_endpoint_send_arrives_with_its_source_and_key_and_leaves_with_its_companion() -> None:
    from kurable.engine.signals import ENDPOINT_PREFIX

    via = ENDPOINT_PREFIX + "APPROVE"
    [arrival] = intake({KEY: '{"by":"ann"}', via: "abc"}, []).arrivals
    assert (arrival.source, arrival.idempotency_key) == ("endpoint", "abc")
    journaled = [Signal(3, "APPROVE", {"by": "ann"}, source="endpoint", key="abc")]
    taken = intake({KEY: '{"by":"ann"}', via: "abc"}, journaled)
    assert not taken.arrivals and taken.redeliveries[0].seq == 3
    removed = [op["path"] for op in consumption_patch(taken) if op["op"] == "remove"]
    assert removed == [
        "/metadata/annotations/kurable.dev~1signal.APPROVE",
        "/metadata/annotations/kurable.dev~1signal-endpoint.APPROVE",
    ]
    # Another key's send of the same payload is a new send, not this one redelivered.
    assert intake({KEY: '{"by":"ann"}', via: "xyz"}, journaled).arrivals


def test_a_format_1_journal_gets_no_source_and_its_plain_record_matches_an_endpoint_send() -> None:
    from kurable.engine.signals import ENDPOINT_PREFIX, signal_record

    via = ENDPOINT_PREFIX + "APPROVE"
    [arrival] = intake({KEY: "1", via: "abc"}, []).arrivals
    assert signal_record(arrival, 1).to_wire() == {"name": "APPROVE", "payload": 1}
    assert signal_record(arrival, 2).to_wire() == {
        "name": "APPROVE",
        "payload": 1,
        "source": "endpoint",
        "idempotencyKey": "abc",
    }
    taken = intake({KEY: "1", via: "abc"}, [Signal(4, "APPROVE", 1)])
    assert [r.seq for r in taken.redeliveries] == [4]
