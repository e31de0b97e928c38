"""Faults a review found after issues 9 and 10: durations past a timedelta, a wait's step
timeout named `None`, an evaluated `sleep.until` not held to the CRD's rule, an engine
exception outside `next_decision` retried as an outage."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from kurable.api.v1alpha1 import HORIZON_SECONDS, WorkflowSpec, duration_seconds, parse_duration
from kurable.api.v1alpha1.workflow import UNTIL_MESSAGE, Retry
from kurable.engine import decide, validate
from kurable.engine.journal import RunState, fold

from .test_decide import T0, WORKFLOW, run, start
from .test_failures import http

HUGE = ["1000000000d", "99999999999999d", "9" * 63 + "d", "999999999999999999h1ms"]

# -- 1. every duration the schema accepts is usable: read at most the horizon ----------


@pytest.mark.parametrize("text", HUGE)
def test_a_duration_past_the_horizon_reads_as_the_horizon(text: str) -> None:
    assert duration_seconds(text) == HORIZON_SECONDS
    assert parse_duration(text) == decide.HORIZON == timedelta(days=365_000)


def test_a_duration_inside_the_horizon_is_read_exactly() -> None:
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert duration_seconds("364999d") == 364_999 * 86_400


@pytest.mark.parametrize("text", HUGE)
def test_the_validator_accepts_every_huge_duration_the_schema_does(text: str) -> None:
    spec = WorkflowSpec.model_validate(
        {
            "timeout": text,
            "retry": {"backoff": {"initial": text, "max": text}},
            "steps": [
                {"name": "s", "timeout": text, "sleep": {"duration": text}},
                {"name": "w", "wait": {"signal": "GO", "timeout": text}},
                http("h", timeout=text, retry={"backoff": {"initial": text}}),
            ],
        }
    )
    assert validate.definition_problems(spec, "spec") == []


@pytest.mark.parametrize("text", HUGE)
def test_a_huge_sleep_under_a_short_run_timeout_ends_with_timeout(text: str) -> None:
    journal, decision = run(
        start({"timeout": "10s", "steps": [{"name": "s", "sleep": {"duration": text}}]}), T0
    )
    assert isinstance(decision, decide.Wait) and decision.until == T0 + timedelta(seconds=10)
    journal, decision = run(journal, T0 + timedelta(seconds=10))
    assert isinstance(decision, decide.Done)
    state = fold(journal)
    assert (state.phase, state.reason) == ("Failed", "Timeout")


@pytest.mark.parametrize("text", HUGE)
def test_a_huge_run_timeout_or_backoff_is_usable(text: str) -> None:
    _, decision = run(start({"timeout": text, "steps": [http("h")]}), T0)
    assert isinstance(decision, decide.Act)
    assert decision.deadline == T0 + decide.HORIZON
    delay = decide.backoff_delay(Retry.model_validate({"backoff": {"initial": text}}), 3, "k")
    assert delay <= decide.HORIZON


# -- 2. a wait ended by the step's timeout names that timeout ------------------------------


def test_a_wait_ended_by_its_step_timeout_names_that_timeout() -> None:
    spec = {"steps": [{"name": "w", "timeout": "3s", "wait": {"signal": "GO"}}]}
    journal, _ = run(start(spec), T0)
    journal, _ = run(journal, T0 + timedelta(seconds=3))
    error = fold(journal).steps["w"].error
    assert error == {"kind": "Timeout", "message": "no signal 'GO' within 3s"}


def test_a_wait_ended_by_its_wait_timeout_names_that_timeout() -> None:
    spec = {"steps": [{"name": "w", "wait": {"signal": "GO", "timeout": "2s"}}]}
    journal, _ = run(start(spec), T0)
    journal, _ = run(journal, T0 + timedelta(seconds=2))
    error = fold(journal).steps["w"].error
    assert error == {"kind": "Timeout", "message": "no signal 'GO' within 2s"}


# -- 3. an evaluated sleep.until meets the rule a literal one meets ------------------------


def _sleep_until(until: str, input: Any) -> dict[str, Any] | None:
    spec = {"input": input, "steps": [{"name": "nap", "sleep": {"until": until}}]}
    journal, _ = run(start(spec), T0)
    return fold(journal).steps["nap"].error


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-12-01T05:20:22", "'2026-12-01T05:20:22'"),  # no UTC offset
        ("tomorrow", "'tomorrow'"),
        ("2026-12-01 05:20:22Z", "'2026-12-01 05:20:22Z'"),  # not RFC 3339
        (20261201, "20261201"),
    ],
)
def test_an_evaluated_until_without_the_crds_form_fails_the_step_naming_field_and_value(
    value: Any, shown: str
) -> None:
    error = _sleep_until("${ input.t }", {"t": value})
    assert error is not None and error["kind"] == "InvalidTimer"
    assert error["message"] == f"nap.sleep: until evaluated to {shown}: {UNTIL_MESSAGE}"
    assert "isoformat" not in error["message"]


def test_an_evaluated_until_of_a_day_that_does_not_exist_says_so() -> None:
    error = _sleep_until("${ input.t }", {"t": "2026-02-30T00:00:00Z"})
    assert error is not None and error["kind"] == "InvalidTimer"
    assert "'2026-02-30T00:00:00Z', a time that does not exist" in error["message"]


@pytest.mark.parametrize("value", ["2026-01-01T12:00:05+00:00", "2026-01-01t13:00:05z"])
def test_an_evaluated_until_in_the_crds_form_sleeps_until_then(value: str) -> None:
    spec = {"input": {"t": value}, "steps": [{"name": "nap", "sleep": {"until": "${ input.t }"}}]}
    _, decision = run(start(spec), T0)
    assert isinstance(decision, decide.Wait) and decision.until is not None
    assert decision.until in (T0 + timedelta(seconds=5), T0 + timedelta(hours=1, seconds=5))


# -- 4. an exception inside the engine ends the run, wherever the driver called it ---------


def _started() -> RunState:
    return fold(start({"steps": [http("a"), http("b")]}))


def test_an_internal_error_before_the_start_finishes_the_run_failed() -> None:
    commit = decide.internal_error(RunState(), OverflowError("too big"), "starting")
    assert commit is not None and commit.type == "WorkflowFinished"
    data = commit.data.to_wire()
    assert (data["phase"], data["reason"]) == ("Failed", "InternalError")
    assert data["error"]["message"] == "internal error while starting: OverflowError: too big"


def test_an_internal_error_while_running_fails_the_run_so_compensations_run() -> None:
    commit = decide.internal_error(_started(), KeyError("x"), "projecting status")
    assert commit is not None and commit.type == "RunFailing"
    error = commit.data.to_wire()["error"]
    assert error["reason"] == "InternalError"
    assert error["message"] == "internal error while projecting status: KeyError: 'x'"


def test_an_internal_error_while_compensating_finishes_the_run_and_keeps_the_cause() -> None:
    journal, _ = run(start({"steps": [http("a")]}), T0, decide.Flags(cancel=True))
    state = fold(journal[:2])
    assert state.failing is not None
    commit = decide.internal_error(state, ValueError("v"), "recording an outcome")
    assert commit is not None and commit.type == "WorkflowFinished"
    data = commit.data.to_wire()
    assert (data["phase"], data["reason"]) == ("Cancelled", "InternalError")
    assert data["error"]["cause"]["reason"] == "Cancelled"


def test_an_internal_error_after_the_end_journals_nothing() -> None:
    journal, _ = run(start({"steps": [{"name": "s", "set": {"x": 1}}]}), T0)
    assert fold(journal).finished
    assert decide.internal_error(fold(journal), ValueError("v"), "projecting status") is None


def test_the_start_record_of_a_definition_with_huge_durations_is_written() -> None:
    definition = WorkflowSpec.model_validate(
        {"timeout": "99999999999999d", "steps": [{"name": "s", "sleep": {"duration": "1s"}}]}
    )
    commit = decide.start_record(definition, None, WORKFLOW, T0)
    assert commit.data.to_wire()["deadline"].startswith("3025-")


# -- 5. integers outside int64 in the input are usable CEL values --------------------------


def test_an_integer_outside_int64_breaks_no_expression_that_does_not_read_it() -> None:
    from kurable.engine import expressions

    context = {"input": {"qty": 3, "threshold": 2.5, "big": 18446744073709552000}}
    assert expressions.evaluate("input.qty > input.threshold", context) is True


@pytest.mark.parametrize(
    ("value", "cel_type"),
    [
        (2**63 - 1, "int"),
        (2**63, "uint"),
        (2**64 - 1, "uint"),
        (2**64, "double"),
        (-(2**63) - 1, "double"),
    ],
)
def test_an_integer_becomes_int_uint_or_double_by_its_range(value: int, cel_type: str) -> None:
    from kurable.engine import expressions

    assert expressions.evaluate("type(input.n)", {"input": {"n": value}}) == cel_type
    assert expressions.evaluate("input.n > 0 || input.n < 0", {"input": {"n": value}}) is True
