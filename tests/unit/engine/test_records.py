"""Journal records: typed payloads, their stored form, and the format version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kurable.api.v1alpha1 import WorkflowSpec
from kurable.engine import decide, records
from kurable.engine.journal import Record, fold
from kurable.engine.records import FORMAT_VERSION, UnsupportedFormat

from .test_decide import T0, WORKFLOW

GOLDEN = sorted((Path(__file__).parent / "journals").glob("*.json"))


def _stored(path: Path) -> list[dict[str, Any]]:
    stored: list[dict[str, Any]] = json.loads(path.read_text())["records"]
    return stored


def test_every_record_type_of_the_golden_journals_reads_into_its_own_model() -> None:
    seen: set[str] = set()
    for path in GOLDEN:
        for raw in _stored(path):
            record = Record.from_json(raw)
            assert type(record.data) is records.PAYLOADS[raw["type"]]
            seen.add(raw["type"])
    assert seen == set(records.PAYLOADS)


def test_a_journal_without_format_version_reads_as_version_1_and_writes_back_unchanged() -> None:
    raw = _stored(Path(__file__).parent / "journals" / "set_sleep.json")[0]
    assert "formatVersion" not in raw["data"]
    record = Record.from_json(raw)
    assert isinstance(record.data, records.WorkflowStarted)
    assert record.data.format_version == 1
    assert record.to_json() == raw


def test_a_new_run_journals_the_newest_format_version() -> None:
    definition = WorkflowSpec.model_validate({"steps": [{"name": "a", "set": {"x": 1}}]})
    commit = decide.start_record(definition, None, WORKFLOW, T0)
    wire = Record(0, commit.type, "t", data=commit.data).to_json()
    assert wire["data"]["formatVersion"] == FORMAT_VERSION == 2
    assert "traceparent" not in wire["data"]
    assert fold([Record.from_json(wire)]).position == "a"


def test_a_run_started_with_a_traceparent_journals_it_in_format_2() -> None:
    definition = WorkflowSpec.model_validate({"steps": [{"name": "a", "set": {"x": 1}}]})
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    commit = decide.start_record(definition, None, WORKFLOW, T0, traceparent=parent)
    wire = Record(0, commit.type, "t", data=commit.data).to_json()
    assert wire["data"]["formatVersion"] == FORMAT_VERSION == 2
    assert wire["data"]["traceparent"] == parent
    assert fold([Record.from_json(wire)]).traceparent == parent
    malformed = decide.start_record(definition, None, WORKFLOW, T0, traceparent="00-zz-01")
    assert "traceparent" not in malformed.data.to_wire()


def test_a_journal_in_a_newer_format_is_refused_saying_to_upgrade() -> None:
    raw = _stored(Path(__file__).parent / "journals" / "http.json")[0]
    newer = {**raw, "data": {**raw["data"], "formatVersion": FORMAT_VERSION + 1}}
    with pytest.raises(UnsupportedFormat, match="upgrade the operator"):
        Record.from_json(newer)
    with pytest.raises(UnsupportedFormat, match="unknown journal record type 'StepPaused'"):
        Record.from_json({"seq": 1, "type": "StepPaused", "at": "t"})


def test_a_payload_key_the_format_does_not_have_is_refused_not_dropped() -> None:
    raw = {"seq": 1, "type": "StepStarted", "at": "t", "step": "a", "data": {"wakeUp": "x"}}
    with pytest.raises(ValidationError, match="wakeUp"):
        Record.from_json(raw)


@pytest.mark.parametrize(
    "payload",
    [
        records.StepStarted(thread="p.b", wake_at="2026-01-01T00:00:00Z"),
        records.StepCompleted(output=None, next=None, vars={"x": 1}, consumed=3),
        records.StepFailed(
            error=records.StepErrorInfo(kind="Timeout", message="late"), retry_at="t2"
        ),
        records.RunFailing(
            phase="Failed", error=records.RunError(step=None, reason="Timeout", message="m")
        ),
        records.WorkflowFinished(
            phase="Failed",
            reason="Compensated",
            error=records.RunError(reason="Compensated", message="m", cause="StepFailed"),
        ),
        records.SignalReceived(name="GO", payload=[1, {"a": None}]),
    ],
    ids=lambda p: type(p).__name__,
)
def test_a_record_round_trips_through_its_stored_form_keeping_explicit_nulls(
    payload: records.RecordData,
) -> None:
    type_: Any = type(payload).__name__
    record = Record(4, type_, "2026-01-01T00:00:00.000000Z", "s", 2, payload, "exec")
    stored = json.loads(json.dumps(record.to_json()))
    assert Record.from_json(stored) == record
    assert Record.from_json(stored).to_json() == stored
    if isinstance(payload, records.StepCompleted):
        assert stored["data"]["next"] is None  # "past the last step", not "unset"


def test_a_record_refuses_a_payload_of_another_type() -> None:
    with pytest.raises(TypeError, match="StepStarted record holds a StepSkipped"):
        Record(1, "StepStarted", "t", "s", 1, records.StepSkipped(next=None))
