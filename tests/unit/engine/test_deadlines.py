"""Deadlines fire whatever the run waits for: every Wait wakes up at the earliest of its own
time, the step's deadline and the run's (issue 10, "Deadlines that do not fire")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from kurable.engine import decide
from kurable.engine.decide import StepError
from kurable.engine.journal import Record, fold

from .test_decide import T0, run, start, to_record
from .test_failures import http

SUSPENDED = decide.Flags(suspend=True)


def seconds(n: float) -> datetime:
    return T0 + timedelta(seconds=n)


def finish_at(journal: list[Record], now: datetime, flags: decide.Flags) -> list[Record]:
    """Decide at `now` until the run waits or ends, acting on nothing (no Act expected)."""
    journal, decision = run(journal, now, flags)
    assert isinstance(decision, decide.Wait | decide.Done), decision
    return journal


# -- the field report: spec.timeout 6s, one 2s sleep, suspended during the sleep ---------

FIELD_REPORT = {"timeout": "6s", "steps": [{"name": "nap", "sleep": {"duration": "2s"}}]}


def test_field_report_a_run_suspended_during_its_sleep_fails_with_timeout_at_its_deadline() -> None:
    journal, decision = run(start(FIELD_REPORT), T0)
    assert decision == decide.Wait(seconds(2), "sleeping until 2026-01-01T12:00:02.000000Z")
    # `kubectl patch ... spec.suspend=true` at 1 s; the timer still fires at 2 s.
    journal, decision = run(journal, seconds(1), SUSPENDED)
    journal, decision = run(journal, seconds(2), SUSPENDED)
    # Suspended, but awake for the run's deadline: not "until something changes".
    assert decision == decide.Wait(seconds(6), "Suspended")
    assert not fold(journal).finished  # a suspended run does not finish

    journal, decision = run(journal, seconds(6), SUSPENDED)
    assert isinstance(decision, decide.Done)
    state = fold(journal)
    assert state.phase == "Failed" and state.reason == "Timeout"
    assert state.error is not None and state.error["reason"] == "Timeout"
    assert journal[-1].at == "2026-01-01T12:00:06.000000Z"


def test_field_report_with_a_compensation_it_runs_while_the_run_is_still_suspended() -> None:
    spec = {
        "timeout": "6s",
        "steps": [
            {"name": "nap", "sleep": {"duration": "2s"}, "compensate": {"set": {"undone": True}}}
        ],
    }
    journal, _ = run(start(spec), T0)
    journal = finish_at(journal, seconds(2), SUSPENDED)
    journal = finish_at(journal, seconds(6), SUSPENDED)
    state = fold(journal)
    assert state.phase == "Failed" and state.reason == "Compensated"
    assert state.error is not None and state.error["cause"] == "Timeout"
    assert state.compensated == ("nap",)


def test_a_suspended_run_resumed_before_its_deadline_finishes() -> None:
    journal, _ = run(start(FIELD_REPORT), T0)
    journal = finish_at(journal, seconds(2), SUSPENDED)
    journal, decision = run(journal, seconds(3))
    assert isinstance(decision, decide.Done)
    assert fold(journal).phase == "Succeeded"


# -- each wait kind, under a run deadline and under a step deadline ---------------------


def test_suspended_before_the_next_step_wakes_up_for_the_run_deadline() -> None:
    spec = {"timeout": "1m", "steps": [{"name": "a", "set": {"x": 1}}, http("b")]}
    journal, decision = run(start(spec), T0, SUSPENDED)
    assert decision == decide.Wait(seconds(60), "Suspended")
    journal, _ = run(journal, seconds(60), SUSPENDED)
    assert fold(journal).reason == "Timeout"


def test_suspended_inside_a_parallel_branch_wakes_up_for_the_run_deadline() -> None:
    spec = {
        "timeout": "1m",
        "steps": [
            {
                "name": "p",
                "parallel": {"branches": [{"name": "b", "steps": [{"name": "s", "set": {}}]}]},
            }
        ],
    }
    _, decision = run(start(spec), T0, SUSPENDED)
    assert isinstance(decision, decide.Wait) and decision.until == seconds(60)


def test_waiting_for_a_signal_wakes_up_for_the_run_deadline() -> None:
    spec = {"timeout": "10s", "steps": [{"name": "approve", "wait": {"signal": "OK"}}]}
    journal, decision = run(start(spec), T0)
    assert decision == decide.Wait(seconds(10), "waiting for signal OK")
    journal, _ = run(journal, seconds(10))
    assert fold(journal).reason == "Timeout"


def test_waiting_for_a_signal_wakes_up_for_the_step_timeout_before_the_wait_timeout() -> None:
    spec = {"steps": [{"name": "approve", "timeout": "5s", "wait": {"signal": "OK"}}]}
    _, decision = run(start(spec), T0)
    assert decision == decide.Wait(seconds(5), "waiting for signal OK")


def test_a_retry_backoff_wakes_up_for_the_run_deadline() -> None:
    retry = {"maxAttempts": 3, "backoff": {"initial": "1h", "max": "1h", "jitter": 0}}
    spec = {"timeout": "30s", "steps": [http("call", retry=retry)]}
    journal, act = run(start(spec), T0)
    assert isinstance(act, decide.Act)
    failed = decide.outcome(fold(journal), act, T0, error=StepError("Unavailable", "down"))
    journal.append(to_record(failed, len(journal), T0))
    journal, decision = run(journal, T0)
    assert isinstance(decision, decide.Wait) and decision.until == seconds(30)
    journal, _ = run(journal, seconds(30))
    assert fold(journal).reason == "Timeout"


def test_a_sleep_wakes_up_for_its_step_timeout_and_fails_the_attempt() -> None:
    spec = {"steps": [{"name": "nap", "timeout": "3s", "sleep": {"duration": "1h"}}]}
    journal, decision = run(start(spec), T0)
    assert isinstance(decision, decide.Wait) and decision.until == seconds(3)
    journal, _ = run(journal, seconds(3))
    state = fold(journal)
    assert state.phase == "Failed"
    assert state.steps["nap"].error == {"kind": "Timeout", "message": "attempt 1 timed out"}


def test_waiting_for_a_child_run_being_performed_wakes_up_for_its_deadlines() -> None:
    child = {"name": "sub", "workflow": {"templateRef": {"name": "t"}}, "timeout": "20s"}
    journal, act = run(start({"timeout": "1m", "steps": [child]}), T0)
    assert isinstance(act, decide.Act) and act.deadline == seconds(20)
    busy = frozenset({"sub"})
    decision = decide.next_decision(fold(journal), T0, busy=busy)
    assert decision == decide.Wait(seconds(20), "performing sub")
    # Past the step's deadline only the executor's return (it enforces the deadline)
    # can change anything; the run's deadline still wakes the run up.
    decision = decide.next_decision(fold(journal), seconds(25), busy=busy)
    assert decision == decide.Wait(seconds(60), "performing sub")
    decision = decide.next_decision(fold(journal), seconds(60), busy=busy)
    assert isinstance(decision, decide.Commit) and decision.type == "RunFailing"


def test_a_compensation_being_performed_wakes_up_for_its_own_deadline() -> None:
    spec = {
        "timeout": "5s",
        "steps": [
            http("book", compensate={"http": {"url": "http://svc/unbook"}, "timeout": "4s"}),
            {"name": "nap", "sleep": {"duration": "1h"}},
        ],
    }
    journal, act = run(start(spec), T0)
    assert isinstance(act, decide.Act)
    journal.append(to_record(decide.outcome(fold(journal), act, T0, {}), len(journal), T0))
    journal, undo = run(journal, seconds(5))
    assert isinstance(undo, decide.Act) and undo.compensating == "book"
    decision = decide.next_decision(fold(journal), seconds(5), busy=frozenset({undo.step.name}))
    assert decision == decide.Wait(seconds(9), "performing book:compensate")


# -- waiting for a template (before the first record) -----------------------------------


def test_waiting_for_a_template_wakes_up_at_the_deadline_counted_from_creation() -> None:
    created = T0
    decision = decide.waiting_to_start("6s", created, seconds(1), "template t not found")
    assert decision == decide.Wait(seconds(6), "template t not found")
    assert decide.waiting_to_start(None, created, seconds(1), "r") == decide.Wait(None, "r")


def test_waiting_for_a_template_past_the_deadline_fails_the_run_with_timeout() -> None:
    decision = decide.waiting_to_start("6s", T0, seconds(6), "template t not found")
    assert isinstance(decision, decide.Commit) and decision.type == "WorkflowFinished"
    state = fold([to_record(decision, 0, seconds(6))])
    assert state.phase == "Failed" and state.reason == "Timeout"
    assert state.error is not None and "template t not found" in state.error["message"]


# -- every wait, for every journal prefix: never past a deadline it could miss -----------


def test_no_wait_sleeps_past_the_run_deadline_whatever_the_run_is_doing() -> None:
    """Property over one run with every wait kind: at each decision, a Wait wakes up no
    later than the run's deadline (while the run is not failing yet)."""
    spec: dict[str, Any] = {
        "timeout": "2m",
        "steps": [
            {"name": "nap", "sleep": {"duration": "10s"}},
            {"name": "approve", "wait": {"signal": "OK"}},
            http("call", retry={"maxAttempts": 2, "backoff": {"initial": "1h", "max": "1h"}}),
            {"name": "last", "set": {"x": 1}},
        ],
    }
    deadline = seconds(120)
    for flags in (decide.Flags(), SUSPENDED):
        journal = start(spec)
        clock = T0
        for _ in range(50):
            decision = decide.next_decision(fold(journal), clock, flags)
            if isinstance(decision, decide.Done):
                break
            if isinstance(decision, decide.Commit):
                journal.append(to_record(decision, len(journal), clock))
                continue
            if isinstance(decision, decide.Act):
                error = StepError("Unavailable", "down")
                commit = decide.outcome(fold(journal), decision, clock, error=error)
                journal.append(to_record(commit, len(journal), clock))
                continue
            assert decision.until is not None, decision
            if fold(journal).failing is None:
                assert decision.until <= deadline, decision
            clock = decision.until
        state = fold(journal)
        assert state.phase == "Failed" and state.reason == "Timeout"
        assert clock == deadline


def test_waiting_to_start_does_not_overflow_on_a_huge_timeout() -> None:
    huge = "9" * 60 + "d"
    decision = decide.waiting_to_start(huge, T0, datetime(2027, 1, 1, tzinfo=UTC), "r")
    assert isinstance(decision, decide.Wait) and decision.until == T0 + decide.HORIZON
