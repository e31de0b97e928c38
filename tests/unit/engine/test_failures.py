"""Failure handling in the deciding core: retries, timeouts, failover, sagas, cancel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kurable.engine import decide
from kurable.engine.decide import StepError
from kurable.engine.journal import Record, fold
from kurable.engine.status import project

from .test_decide import T0, run, start, to_record

# What the outside world answers to an Act: (output, error).
World = Callable[[decide.Act, int], tuple[Any, StepError | None]]


def ok(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
    return {"did": act.step.name}, None


def simulate(
    spec: dict[str, Any],
    world: World = ok,
    flags: Callable[[list[Record]], decide.Flags] = lambda j: decide.Flags(),
    limit: int = 500,
) -> list[Record]:
    """Drive a run to its end, jumping the clock to each wake-up time."""
    journal = start(spec)
    clock = T0
    calls: dict[str, int] = {}
    for _ in range(limit):
        journal, decision = run(journal, clock, flags(journal))
        if isinstance(decision, decide.Done):
            return journal
        if isinstance(decision, decide.Act):
            calls[decision.step.name] = calls.get(decision.step.name, 0) + 1
            output, error = world(decision, calls[decision.step.name])
            commit = decide.outcome(fold(journal), decision, clock, output, error)
            journal.append(to_record(commit, len(journal), clock))
            continue
        assert isinstance(decision, decide.Wait)
        assert decision.until is not None, f"stuck waiting: {decision}"
        clock = max(clock, decision.until)
    raise AssertionError("run did not finish")


def http(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "http": {"url": f"http://svc/{name}"}, **extra}


def test_a_retryable_error_is_retried_with_backoff_then_succeeds() -> None:
    def flaky(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        return (None, StepError("HttpServerError", "503")) if n < 3 else ({"ok": 1}, None)

    retry = {"maxAttempts": 5, "backoff": {"initial": "2s", "factor": 2, "jitter": 0}}
    journal = simulate({"steps": [http("call", retry=retry)]}, flaky)
    state = fold(journal)
    assert state.phase == "Succeeded"
    assert state.steps["call"].attempts == 3
    failures = [r for r in journal if r.type == "StepFailed"]
    assert [r.data.retry_at for r in failures] == [
        "2026-01-01T12:00:02.000000Z",
        "2026-01-01T12:00:06.000000Z",
    ]


def test_a_non_retryable_error_fails_at_once_and_the_run_fails() -> None:
    def reject(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        return None, StepError("HttpClientError", "404 not found")

    journal = simulate({"steps": [http("call", retry={"maxAttempts": 5})]}, reject)
    state = fold(journal)
    assert state.phase == "Failed" and state.reason == "StepFailed"
    assert state.steps["call"].attempts == 1
    assert state.error is not None and state.error["step"] == "call"


def test_retry_on_lists_exactly_the_kinds_to_retry() -> None:
    def reject(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        return (None, StepError("HttpClientError", "409")) if n == 1 else ("fine", None)

    retry = {"maxAttempts": 2, "retryOn": ["HttpClientError"]}
    journal = simulate({"steps": [http("call", retry=retry)]}, reject)
    assert fold(journal).phase == "Succeeded"


def test_exhausted_retries_go_to_on_failure_step() -> None:
    def down(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        if act.step.name == "primary":
            return None, StepError("ConnectionError", "refused")
        return {"via": act.step.name}, None

    spec = {
        "steps": [
            http("primary", retry={"maxAttempts": 2}, onFailure={"goto": "fallback"}),
            {"name": "never", "set": {"x": 1}, "next": "done"},
            http("fallback"),
            {"name": "done", "set": {"ok": True}},
        ]
    }
    journal = simulate(spec, down)
    state = fold(journal)
    assert state.phase == "Succeeded"
    assert state.steps["primary"].phase == "Failed" and state.steps["primary"].attempts == 2
    assert "never" not in state.steps
    assert state.steps["fallback"].output == {"via": "fallback"}


def test_a_step_timeout_fails_the_attempt_when_the_executor_comes_back_late() -> None:
    journal, decision = run(start({"steps": [http("slow", timeout="5s")]}), T0)
    assert isinstance(decision, decide.Act)
    # The executor crashed mid-act and returns after the deadline.
    journal, decision = run(journal, T0 + timedelta(seconds=6))
    state = fold(journal)
    assert state.phase == "Failed"
    assert state.steps["slow"].error == {"kind": "Timeout", "message": "attempt 1 timed out"}


def test_a_workflow_timeout_fails_the_run_and_compensates() -> None:
    spec = {
        "timeout": "10s",
        "steps": [
            http("book", compensate={"http": {"url": "http://svc/unbook"}}),
            {"name": "nap", "sleep": {"duration": "1h"}},
        ],
    }
    journal = simulate(spec)
    state = fold(journal)
    assert state.phase == "Failed" and state.reason == "Compensated"
    assert state.error is not None and state.error["cause"] == "Timeout"
    assert state.compensated == ("book",)
    finished = journal[-1]
    assert finished.at == "2026-01-01T12:00:10.000000Z"


def test_saga_compensates_completed_steps_in_reverse_order() -> None:
    def fail_last(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        if act.step.name == "ship":
            return None, StepError("HttpClientError", "out of stock")
        return {"done": act.step.name}, None

    spec = {
        "steps": [
            http("reserve", compensate={"http": {"url": "http://svc/release"}}),
            {"name": "note", "set": {"x": 1}},
            http("charge", compensate={"http": {"url": "http://svc/refund"}}),
            http("ship"),
        ]
    }
    journal = simulate(spec, fail_last)
    state = fold(journal)
    assert state.phase == "Failed" and state.reason == "Compensated"
    compensations = [r.step for r in journal if r.type == "StepCompleted" and r.data.of]
    assert compensations == ["charge:compensate", "reserve:compensate"]
    assert state.error is not None and state.error["step"] == "ship"


def test_a_failing_compensation_is_retried_then_reported() -> None:
    def refund_down(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        if act.step.name == "charge:compensate":
            return None, StepError("HttpServerError", "502")
        if act.step.name == "ship":
            return None, StepError("HttpClientError", "no")
        return "ok", None

    spec = {
        "steps": [
            http(
                "charge",
                compensate={"http": {"url": "http://svc/refund"}, "retry": {"maxAttempts": 3}},
            ),
            http("ship"),
        ]
    }
    journal = simulate(spec, refund_down)
    state = fold(journal)
    assert state.phase == "Failed" and state.reason == "CompensationFailed"
    assert state.steps["charge:compensate"].attempts == 3
    assert state.error is not None and state.error["step"] == "charge:compensate"


def _cancel_once_napping(journal: list[Record]) -> decide.Flags:
    return decide.Flags(cancel=any(r.step == "nap" for r in journal))


def test_cancel_compensates_and_ends_cancelled() -> None:
    spec = {
        "steps": [
            {"name": "hold", "set": {"h": 1}, "compensate": {"set": {"released": True}}},
            {"name": "nap", "sleep": {"duration": "1h"}},
        ]
    }
    journal = simulate(spec, flags=_cancel_once_napping)
    state = fold(journal)
    assert state.phase == "Cancelled" and state.reason == "Compensated"
    assert state.steps["hold:compensate"].output == {"released": True}


def test_cancel_with_nothing_to_compensate_says_cancelled() -> None:
    spec = {"steps": [{"name": "nap", "sleep": {"duration": "1h"}}]}
    journal = simulate(spec, flags=_cancel_once_napping)
    state = fold(journal)
    assert (state.phase, state.reason) == ("Cancelled", "Cancelled")


def test_wait_takes_a_signal_sent_before_the_step_started() -> None:
    journal = start({"steps": [{"name": "approve", "wait": {"signal": "APPROVE"}}]})
    journal.append(
        Record(1, "SignalReceived", "t", data={"name": "APPROVE", "payload": {"ok": True}})
    )
    journal, _ = run(journal, T0)
    state = fold(journal)
    assert state.phase == "Succeeded"
    assert state.steps["approve"].output == {"ok": True}
    assert state.consumed == frozenset({1})


def test_wait_times_out_without_a_signal() -> None:
    spec = {"steps": [{"name": "approve", "wait": {"signal": "OK", "timeout": "30s"}}]}
    journal, decision = run(start(spec), T0)
    assert decision == decide.Wait(T0 + timedelta(seconds=30), "waiting for signal OK")
    journal, _ = run(journal, T0 + timedelta(seconds=30))
    state = fold(journal)
    assert state.phase == "Failed"
    assert state.steps["approve"].error is not None
    assert state.steps["approve"].error["kind"] == "Timeout"


def test_each_signal_is_taken_by_one_wait_only() -> None:
    spec = {
        "steps": [{"name": "a", "wait": {"signal": "GO"}}, {"name": "b", "wait": {"signal": "GO"}}]
    }
    journal = start(spec)
    journal.append(Record(1, "SignalReceived", "t", data={"name": "GO", "payload": 1}))
    journal, decision = run(journal, T0)
    assert decision == decide.Wait(None, "waiting for signal GO")
    assert fold(journal).steps["a"].output == 1


@settings(max_examples=80, deadline=None)
@given(
    outcomes=st.lists(st.booleans(), min_size=1, max_size=8),
    with_compensation=st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_compensation_runs_exactly_the_completed_steps_in_reverse(
    outcomes: list[bool], with_compensation: list[bool]
) -> None:
    """Property: whatever fails, the compensated steps are the completed ones that
    declare `compensate`, last completed first, each exactly once."""
    steps = []
    for i, _ in enumerate(outcomes):
        step = http(f"s{i}")
        if with_compensation[i]:
            step["compensate"] = {"http": {"url": f"http://svc/undo{i}"}}
        steps.append(step)

    def world(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        if act.compensating is not None:
            return "undone", None
        i = int(act.step.name[1:])
        return ("ok", None) if outcomes[i] else (None, StepError("HttpClientError", "no"))

    journal = simulate({"steps": steps}, world)
    state = fold(journal)
    first_failure = outcomes.index(False) if False in outcomes else None
    completed = [] if first_failure is None else list(range(first_failure))
    expected = [f"s{i}" for i in reversed(completed) if with_compensation[i]]
    compensations = [
        r.data.of for r in journal if r.type == "StepCompleted" and r.data.of is not None
    ]
    assert compensations == expected
    if first_failure is None:
        assert state.phase == "Succeeded"
    else:
        assert state.phase == "Failed"
        assert state.reason == ("Compensated" if expected else "StepFailed")


def test_an_exception_inside_the_engine_fails_the_run_with_internal_error() -> None:
    """A definition the API server would refuse (`timeout: soon`) but that reached the
    engine anyway: deciding raised ValueError on every try, so the run looped forever."""
    journal, decision = run(start({"steps": [http("call", timeout="soon")]}), T0)
    assert isinstance(decision, decide.Done)
    state = fold(journal)
    assert state.phase == "Failed" and state.reason == "InternalError"
    assert state.error is not None and "'soon' is not a duration" in state.error["message"]


def test_an_exception_while_compensating_finishes_the_run_with_internal_error() -> None:
    spec = {"steps": [http("book", compensate={"http": {"url": "http://u"}, "timeout": "soon"})]}
    journal, act = run(start(spec), T0)
    assert isinstance(act, decide.Act)
    journal.append(to_record(decide.outcome(fold(journal), act, T0, {}), len(journal), T0))
    journal, decision = run(journal, T0, decide.Flags(cancel=True))
    assert isinstance(decision, decide.Done)
    state = fold(journal)
    assert state.phase == "Cancelled" and state.reason == "InternalError"
    assert state.error is not None and state.error["cause"]["reason"] == "Cancelled"


def _failing_state(spec: dict[str, Any], world: World) -> Any:
    """The run's state just after its RunFailing record."""
    journal = simulate(spec, world)
    at = next(i for i, r in enumerate(journal) if r.type == "RunFailing")
    return fold(journal[: at + 1])


def test_the_failing_message_names_what_is_compensated_or_says_nothing_is() -> None:
    def ship_fails(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        if act.step.name == "ship":
            return None, StepError("HttpClientError", "out of stock")
        return "ok", None

    saga = {
        "steps": [
            http("reserve", compensate={"http": {"url": "http://svc/release"}}),
            http("charge", compensate={"http": {"url": "http://svc/refund"}}),
            http("ship"),
        ]
    }
    assert decide.failing_message(_failing_state(saga, ship_fails)) == (
        "StepFailed: out of stock; compensating charge, reserve"
    )
    plain = {"steps": [http("reserve"), http("ship")]}
    message = decide.failing_message(_failing_state(plain, ship_fails))
    assert message.endswith("; nothing to compensate") and "compensating" not in message


def test_a_failing_run_says_compensating_only_when_something_needs_undoing() -> None:
    def fail_ship(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        if act.step.name == "ship":
            return None, StepError("HttpClientError", "out of stock")
        return {"done": act.step.name}, None

    def while_failing(steps: list[dict[str, Any]]) -> dict[str, Any]:
        journal = simulate({"steps": steps}, fail_ship)
        failing = next(i for i, r in enumerate(journal) if r.type == "RunFailing")
        return project(
            fold(journal[: failing + 1]),
            generation=1,
            decision=None,
            previous_conditions=None,
            now="t",
        )

    plain = while_failing([http("reserve"), http("ship")])
    assert plain["message"] == "failing after: step ship: out of stock"
    saga = while_failing([http("reserve", compensate={"http": {"url": "http://x"}}), http("ship")])
    assert saga["message"] == "compensating after: step ship: out of stock"
