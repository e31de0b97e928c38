"""Which child runs a run no longer waits for (engine/children.py)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from kurable.api.v1alpha1 import WorkflowSpec
from kurable.engine import children, decide, records
from kurable.engine.journal import Record, RunState, fold

from .test_decide import T0, WORKFLOW, start, to_record

T = {"name": "t"}


def child(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "workflow": {"templateRef": {"name": "t"}}, **extra}


def drive(
    journal: list[Record],
    busy: set[str],
    now: datetime = T0,
    flags: decide.Flags | None = None,
) -> list[Record]:
    """Commit decisions at `now` (acting steps join `busy`, never return) until the run
    waits or is done."""
    journal = list(journal)
    for _ in range(200):
        decision = decide.next_decision(
            fold(journal), now, flags or decide.Flags(), busy=frozenset(busy)
        )
        if isinstance(decision, decide.Commit):
            journal.append(to_record(decision, len(journal), now))
        elif isinstance(decision, decide.Act):
            busy.add(decision.step.name)
        else:
            return journal
    raise AssertionError("did not settle")


def returned(
    journal: list[Record],
    name: str,
    error: decide.StepError | None,
    busy: frozenset[str] = frozenset(),
) -> list[Record]:
    """The acting step `name` returned `error` (or succeeded with None); `busy` are the
    steps still acting."""
    state = fold(journal)
    act = decide.next_decision(state, T0, busy=busy)
    assert isinstance(act, decide.Act) and act.step.name == name, act
    commit = decide.outcome(state, act, T0, "out" if error is None else None, error)
    return [*journal, to_record(commit, len(journal), T0)]


def listed(name: str, phase: str = "Running", cancel: bool = False, owner: str = "u-1") -> Any:
    return {
        "metadata": {"name": name, "ownerReferences": [{"uid": owner}]},
        "spec": {"cancel": True} if cancel else {},
        "status": {"phase": phase},
    }


def test_a_child_in_flight_is_awaited() -> None:
    journal = drive(start({"steps": [child("sub")]}), set())
    assert children.awaited_children(fold(journal)) == {"w-sub"}


def test_the_run_timing_out_stops_awaiting_its_child() -> None:
    busy: set[str] = set()
    journal = drive(start({"timeout": "4s", "steps": [child("sub")]}), busy)
    assert busy == {"sub"}
    journal = drive(journal, busy, now=T0 + timedelta(seconds=5))
    state = fold(journal)
    assert state.failing is not None and state.failing["error"]["reason"] == "Timeout"
    assert children.awaited_children(state) == frozenset()
    assert children.children_to_cancel([listed("w-sub")], "u-1", frozenset()) == ["w-sub"]


def test_cancelling_the_run_stops_awaiting_its_child() -> None:
    busy: set[str] = set()
    journal = drive(start({"steps": [child("sub")]}), busy)
    journal = drive(journal, busy, flags=decide.Flags(cancel=True))
    state = fold(journal)
    assert state.failing is not None and state.failing["phase"] == "Cancelled"
    assert children.awaited_children(state) == frozenset()


def test_a_step_that_timed_out_for_good_stops_awaiting_its_child() -> None:
    journal = drive(start({"steps": [child("sub", timeout="3s")]}), set())
    failed = returned(journal, "sub", decide.StepError("Timeout", "attempt 1 timed out"))
    assert children.may_abandon(failed[-1])
    assert children.awaited_children(fold(failed)) == frozenset()


def test_a_step_retried_after_a_timeout_still_awaits_the_same_child() -> None:
    spec = {"steps": [child("sub", timeout="3s", retry={"maxAttempts": 2})]}
    journal = drive(start(spec), set())
    retrying = returned(journal, "sub", decide.StepError("Timeout", "attempt 1 timed out"))
    assert not children.may_abandon(retrying[-1])  # the next attempt re-attaches to it
    assert children.awaited_children(fold(retrying)) == {"w-sub"}


def test_fail_fast_stops_awaiting_the_other_branchs_child() -> None:
    spec = {
        "steps": [
            {
                "name": "fan",
                "parallel": {
                    "branches": [
                        {"name": "a", "steps": [child("sub")]},
                        {"name": "b", "steps": [{"name": "boom", "http": {"url": "http://x"}}]},
                    ]
                },
                "onFailure": {"goto": "after"},  # the run goes on: it is not failing
            },
            {"name": "after", "wait": {"signal": "GO"}},
        ]
    }
    busy: set[str] = set()
    journal = drive(start(spec), busy)
    assert busy == {"fan.a.sub", "fan.b.boom"}
    assert children.awaited_children(fold(journal)) == {"w-fan.a.sub"}
    busy.discard("fan.b.boom")
    state = fold(journal)
    act = decide.next_decision(state, T0, busy=frozenset(busy))
    assert isinstance(act, decide.Act) and act.step.name == "fan.b.boom"
    commit = decide.outcome(state, act, T0, None, decide.StepError("HttpClientError", "400"))
    journal = drive([*journal, to_record(commit, len(journal), T0)], busy)
    state = fold(journal)
    assert state.steps["fan"].phase == "Failed" and state.failing is None
    assert state.steps["fan.a.sub"].phase == "Running"  # its action was never harvested
    assert children.awaited_children(state) == frozenset()


def test_without_fail_fast_the_other_branchs_child_is_still_awaited() -> None:
    spec = {
        "steps": [
            {
                "name": "fan",
                "parallel": {
                    "failFast": False,
                    "branches": [
                        {"name": "a", "steps": [child("sub")]},
                        {"name": "b", "steps": [{"name": "boom", "http": {"url": "http://x"}}]},
                    ],
                },
            }
        ]
    }
    busy: set[str] = set()
    journal = drive(start(spec), busy)
    assert busy == {"fan.a.sub", "fan.b.boom"}
    busy.discard("fan.b.boom")
    error = decide.StepError("HttpClientError", "400")
    journal = returned(journal, "fan.b.boom", error, frozenset({"fan.a.sub"}))
    journal = drive(journal, busy)
    state = fold(journal)
    assert state.steps["fan"].phase == "Running"
    assert children.awaited_children(state) == {"w-fan.a.sub"}


def test_a_compensations_child_is_awaited_while_the_run_fails() -> None:
    spec = {
        "steps": [
            {"name": "book", "set": {"b": 1}, "compensate": {"workflow": {"templateRef": T}}},
            child("sub"),
        ]
    }
    busy: set[str] = set()
    journal = drive(start(spec), busy)
    journal = drive(journal, busy, flags=decide.Flags(cancel=True))
    state = fold(journal)
    assert busy == {"sub", "book:compensate"}
    name = children.awaited_children(state)
    assert len(name) == 1 and next(iter(name)).startswith("w-book-compensate")


def test_a_loop_awaits_only_the_child_of_its_current_visit() -> None:
    spec = {"steps": [child("sub", next="sub")]}
    journal = drive(start(spec), set())
    journal = returned(journal, "sub", None)
    journal = drive(journal, set())
    state = fold(journal)
    assert state.steps["sub"].visits == 2
    assert children.awaited_children(state) == {"w-sub-2"}


def test_a_finished_run_awaits_nothing() -> None:
    journal = drive(start({"steps": [child("sub")]}), set())
    journal = returned(journal, "sub", None)
    journal = drive(journal, set())
    state = fold(journal)
    assert state.phase == "Succeeded"
    assert children.awaited_children(state) == frozenset()
    assert children.awaited_children(RunState()) == frozenset()


def test_only_unfinished_uncancelled_unawaited_children_of_the_run_are_cancelled() -> None:
    objects = [
        listed("w-a"),
        listed("w-b", phase="Cancelled"),
        listed("w-c", cancel=True),
        listed("w-d", owner="someone-else"),
        listed("w-e"),
        {"metadata": {"name": "w-f", "ownerReferences": [{"uid": "u-1"}]}},  # Pending
    ]
    assert children.children_to_cancel(objects, "u-1", frozenset({"w-e"})) == ["w-a", "w-f"]


def test_has_children_finds_workflow_steps_anywhere() -> None:
    def has(spec: dict[str, Any]) -> bool:
        return children.has_children(WorkflowSpec.model_validate(spec))

    assert not has({"steps": [{"name": "a", "http": {"url": "http://x"}}]})
    assert has({"steps": [child("a")]})
    nested = {"name": "p", "parallel": {"branches": [{"name": "b", "steps": [child("c")]}]}}
    assert has({"steps": [nested]})
    undo = {"workflow": {"templateRef": {"name": "t"}}}
    assert has({"steps": [{"name": "a", "set": {"x": 1}, "compensate": undo}]})


def test_which_records_may_abandon_a_child() -> None:
    def record(type_: Any, data: Any, step: str | None = "s") -> Record:
        return Record(0, type_, "2026-01-01T00:00:00Z", step, 1, data)

    error = {"kind": "Timeout", "message": "m"}
    assert children.may_abandon(record("StepFailed", {"error": error}))
    assert not children.may_abandon(
        record("StepFailed", {"error": error, "retryAt": "2026-01-01T00:00:01Z"})
    )
    failing = {"phase": "Failed", "error": {"reason": "Timeout", "message": "m"}}
    assert children.may_abandon(record("RunFailing", failing, None))
    assert not children.may_abandon(record("StepCompleted", {"output": 1}))


def test_a_run_cancelled_before_it_started_ends_cancelled_at_once() -> None:
    ended = decide.waiting_to_start(None, T0, T0, "WorkflowTemplate 't' not found", cancel=True)
    assert isinstance(ended, decide.Commit)
    assert isinstance(ended.data, records.WorkflowFinished)
    assert ended.data.phase == "Cancelled" and ended.data.reason == "Cancelled"
    waiting = decide.waiting_to_start(None, T0, T0, "not found")
    assert isinstance(waiting, decide.Wait)
    assert WORKFLOW["name"] == "w"
