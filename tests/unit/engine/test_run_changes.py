"""Which journal records make a run change, and what the change says."""

from __future__ import annotations

import json
from pathlib import Path

from kurable.engine.journal import Record, RunState, apply
from kurable.engine.run_changes import run_change, template_of

JOURNALS = Path(__file__).parent / "journals"


def _changes(name: str) -> list[dict]:
    golden = json.loads((JOURNALS / name).read_text())
    state, changes = RunState(), []
    for raw in golden["records"]:
        record = Record.from_json(raw)
        state = apply(state, record)
        change = run_change(state, record, {"team": "a"})
        if change is not None:
            changes.append(change)
    return changes


def test_a_run_changes_when_it_starts_and_when_it_finishes_only() -> None:
    started, finished = _changes("http.json")
    assert [started["run"]["phase"], finished["run"]["phase"]] == ["Running", "Succeeded"]
    assert started["seq"] == 0 and finished["seq"] > 0
    assert started["run"]["labels"] == {"team": "a"}
    assert started["run"]["finishedAt"] is None
    assert finished["run"]["finishedAt"] == finished["at"]
    assert finished["run"]["startedAt"] == started["at"]
    assert set(finished) == {"run", "input", "output", "vars", "error", "seq", "at"}


def test_a_failed_run_says_why() -> None:
    finished = _changes("output_error.json")[-1]
    assert finished["run"]["phase"] == "Failed"
    assert finished["error"]["reason"]


def test_an_inline_run_goes_to_the_dash_stream_and_a_template_run_to_its_template() -> None:
    assert template_of(RunState()) == "-"
    assert template_of(RunState(template={"name": "fulfil", "generation": 2})) == "fulfil"
