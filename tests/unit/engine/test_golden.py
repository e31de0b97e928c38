"""Golden journals replay to the decisions and status they were written with.

Each file in journals/ is a run an older operator version wrote (records exactly as they
sit in etcd) together with every decision it made and the status it showed. A run in
flight when the operator is upgraded is resumed from such a journal by the new version:
if `fold` or `next_decision` would now decide differently at any point, the run would
take another path than the one its journal already recorded. This is Temporal's replay
test, for Kurable. See journals/generate.py for how the files were written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kurable.api.v1alpha1 import duration_seconds
from kurable.engine import decide
from kurable.engine.journal import Record, fold, parse_time
from kurable.engine.status import project

from .journals.generate import summary

GOLDEN = sorted((Path(__file__).parent / "journals").glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    golden: dict[str, Any] = json.loads(path.read_text())
    return golden


def _path(summary: dict[str, Any]) -> dict[str, Any]:
    """The decision with an expression error's message cut to its field and expression.

    The problem's wording is the CEL library's (reworded when the library changed, issue 10):
    it is not part of the path a replay must take again, the field and the expression are.
    """
    error = summary.get("commit", {}).get("data", {}).get("error")
    if not error or "ExpressionError" not in (error.get("kind"), error.get("reason")):
        return summary
    cut = error["message"].split("': ", 1)[0]
    data = {**summary["commit"]["data"], "error": {**error, "message": cut}}
    return {"commit": {**summary["commit"], "data": data}}


def _committed(wire: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in wire.items() if k not in ("seq", "at", "executor")}


def _wakes_no_later(decision: decide.Wait, golden: dict[str, Any], where: str) -> None:
    """A Wait is not journaled: its `until` is when the executor asks again. A newer
    version may ask earlier (issue 10: every wait now wakes up for the run's and the
    step's deadlines), never later; deciding again early only decides the same."""
    assert decision.reason == golden["reason"], where
    if golden["until"] is not None:
        assert decision.until is not None, where
        assert decision.until <= parse_time(golden["until"]), where


def _same_retry_policy(
    state: Any,
    act: decide.Act,
    now: Any,
    actual: dict[str, Any],
    expected: dict[str, Any],
    where: str,
) -> None:
    """The retry time of a *new* failure follows the current backoff (issue 10: jitter no
    longer takes a delay above `max`); a journaled retryAt is read as written, never
    recomputed. So a retry is still scheduled, within the step's policy; then compare the
    rest of the record."""
    new, old = actual.get("data", {}), expected.get("data", {})
    assert ("retryAt" in new) == ("retryAt" in old), where
    if "retryAt" in new:
        policy = decide.retry_policy(state, act.step)
        longest = duration_seconds(policy.backoff.max) if policy.backoff else 300.0
        delay = (parse_time(new["retryAt"]) - now).total_seconds()
        assert 0 <= delay <= longest, where
        new["retryAt"] = old["retryAt"]


def test_there_are_golden_journals_for_every_step_kind_and_failure_path() -> None:
    names = {p.stem for p in GOLDEN}
    assert {
        "set_sleep",
        "wait_signal",
        "signal_early",
        "http",
        "entity",
        "child_workflow",
        "retry",
        "saga",
        "for_each",
        "parallel",
        "suspend_resume",
        "cancel",
        "timeout",
    } <= names


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_a_golden_journal_replays_to_the_same_decisions_and_status(path: Path) -> None:
    golden = _load(path)
    wire = golden["records"]
    records = [Record.from_json(raw) for raw in wire]
    acts: dict[str, decide.Act] = {}
    for index, entry in enumerate(golden["steps"]):
        where = f"{path.stem} step {index}"
        prefix = records[: entry["records"]]
        if "outcome" not in entry and "decision" not in entry:
            continue  # an outside event (a signal's record is checked as the journal's)
        now = parse_time(entry["now"])
        if "outcome" in entry:
            act = acts.pop(entry["outcome"])
            raw = entry["error"]
            error = decide.StepError(**raw) if raw else None
            commit = decide.outcome(fold(prefix), act, now, entry["output"], error)
            expected = _committed(wire[entry["records"]])
            actual = summary(commit)["commit"]
            _same_retry_policy(fold(prefix), act, now, actual, expected, where)
            assert actual == expected, where
            continue
        flags = decide.Flags(**entry["flags"])
        decision = decide.next_decision(fold(prefix), now, flags, frozenset(entry["busy"]))
        if isinstance(decision, decide.Wait) and "wait" in entry["decision"]:
            _wakes_no_later(decision, entry["decision"]["wait"], where)
        else:
            assert _path(summary(decision)) == _path(entry["decision"]), where
        if isinstance(decision, decide.Commit):
            assert entry["decision"]["commit"] == _committed(wire[entry["records"]]), where
        if isinstance(decision, decide.Act):
            acts[decision.step.name] = decision
        if "status" in entry:
            status = project(
                fold(prefix),
                generation=1,
                decision=decision,
                previous_conditions=None,
                now=entry["now"],
                journal_revision=entry["records"],
            )
            assert json.loads(json.dumps(status)) == entry["status"], where
    assert fold(records).finished, f"{path.stem}: the golden run ends"


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_a_golden_journal_reads_and_writes_back_byte_for_byte(path: Path) -> None:
    """What etcd holds for a run in flight is read and, re-encoded, unchanged."""
    for raw in _load(path)["records"]:
        assert Record.from_json(raw).to_json() == raw
