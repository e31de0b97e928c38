"""Status is a small projection of the journal."""

from __future__ import annotations

from typing import Any

from kurable.engine import decide
from kurable.engine.journal import Record, fold
from kurable.engine.status import RECENT_STEPS, project, shorten


def _journal(n_steps: int, big: Any = None) -> list[Record]:
    steps = [{"name": f"s{i}", "set": {"v": i}} for i in range(n_steps)]
    records = [
        Record(
            0,
            "WorkflowStarted",
            "2026-01-01T00:00:00.000Z",
            data={"definition": {"steps": steps}, "first": "s0"},
        )
    ]
    for i in range(n_steps):
        records.append(
            Record(
                i + 1,
                "StepCompleted",
                f"2026-01-01T00:00:{i % 60:02d}.000Z",
                f"s{i}",
                1,
                {
                    "output": big if big is not None else {"v": i},
                    "next": f"s{i + 1}" if i + 1 < n_steps else None,
                },
            )
        )
    return records


def test_status_keeps_only_the_recent_steps_of_a_long_run() -> None:
    state = fold(_journal(500))
    status = project(state, generation=1, decision=None, previous_conditions=None, now="t")
    assert len(status["steps"]) == RECENT_STEPS
    assert status["stepsCompleted"] == 500
    assert status["journal"]["records"] == 501


def test_large_outputs_are_replaced_by_a_reference() -> None:
    big = {"blob": "x" * 10_000}
    assert shorten(big)["truncated"] is True
    assert shorten({"small": 1}) == {"small": 1}
    state = fold(_journal(1, big))
    status = project(state, generation=1, decision=None, previous_conditions=None, now="t")
    assert status["steps"][0]["output"]["truncated"] is True


def test_succeeded_condition_follows_the_phase_and_keeps_transition_time() -> None:
    journal = _journal(1)
    running = project(
        fold(journal), generation=3, decision=None, previous_conditions=None, now="t1"
    )
    assert running["phase"] == "Running"
    succeeded = {c["type"]: c for c in running["conditions"]}["Succeeded"]
    assert succeeded["status"] == "Unknown" and succeeded["observedGeneration"] == 3

    journal.append(Record(2, "WorkflowFinished", "t2", data={"phase": "Succeeded"}))
    done = project(
        fold(journal),
        generation=3,
        decision=decide.Done(),
        previous_conditions=running["conditions"],
        now="t2",
    )
    conditions = {c["type"]: c for c in done["conditions"]}
    assert conditions["Succeeded"]["status"] == "True"
    assert conditions["Succeeded"]["lastTransitionTime"] == "t2"
    assert conditions["Suspended"]["lastTransitionTime"] == "t1"  # unchanged status


def test_suspended_phase_and_condition() -> None:
    status = project(
        fold(_journal(2)[:2]),
        generation=1,
        decision=decide.Wait(None, "Suspended"),
        previous_conditions=None,
        now="t",
    )
    assert status["phase"] == "Suspended"
    assert {c["type"]: c for c in status["conditions"]}["Suspended"]["status"] == "True"


def test_a_suspend_during_a_step_in_flight_shows_the_suspended_phase() -> None:
    status = project(
        fold(_journal(2)[:2]),
        generation=1,
        decision=decide.Wait(None, "Suspended (sleeping until 2026-01-01T00:00:05Z)"),
        previous_conditions=None,
        now="t",
    )
    assert status["phase"] == "Suspended"
    assert status["message"] == "Suspended (sleeping until 2026-01-01T00:00:05Z)"


def test_an_error_page_quoted_by_a_step_reaches_status_as_one_bounded_line() -> None:
    page = "<!DOCTYPE HTML>\n<html>\n  <body>\n" + "<p>lorem ipsum</p>\n" * 500 + "</html>\n"
    message = f"POST http://svc/call answered 501: {page}"
    journal = _journal(1)[:1]
    journal.append(
        Record(
            1,
            "StepFailed",
            "t1",
            "s0",
            1,
            {"error": {"kind": "HttpServerError", "message": message}},
        )
    )
    journal.append(
        Record(
            2,
            "WorkflowFinished",
            "t2",
            data={
                "phase": "Failed",
                "reason": "StepFailed",
                "error": {"step": "s0", "reason": "StepFailed", "message": message},
            },
        )
    )
    status = project(
        fold(journal), generation=1, decision=decide.Done(), previous_conditions=None, now="t"
    )
    succeeded = {c["type"]: c for c in status["conditions"]}["Succeeded"]
    texts = [succeeded["message"], status["message"], status["error"]["message"]]
    texts += [s["message"] for s in status["steps"] if s["message"]]
    assert len(texts) == 4
    for text in texts:
        assert "\n" not in text and len(text) <= 1024
        assert "answered 501: <!DOCTYPE HTML> <html> <body> <p>lorem ipsum</p>" in text
