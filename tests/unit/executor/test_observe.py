"""Metrics and traces counted from journal commits (kurable.executor.metrics, .tracing).

A journal written by the engine is committed record by record, as the run driver does;
the metrics move by what each record says, and the spans are those of the SDK's
in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from kurable.engine import decide
from kurable.engine.decide import StepError
from kurable.engine.journal import Record, RunState, apply
from kurable.engine.tracecontext import attempt_span_id, run_span_id
from kurable.executor import metrics, tracing

from ..engine.test_decide import WORKFLOW
from ..engine.test_failures import simulate

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
UID = WORKFLOW["uid"]

THREE_STEPS = {
    "steps": [
        {"name": "a", "set": {"x": 1}},
        {
            "name": "b",
            "http": {"url": "http://svc/b"},
            "retry": {"maxAttempts": 3, "backoff": {"initial": "1s", "jitter": 0}},
        },
        {"name": "c", "set": {"y": 2}},
    ]
}


def flaky(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
    if act.step.name == "b" and n == 1:
        return None, StepError("HttpServerError", "503")
    return {"ok": n}, None


def journal_with_parent() -> list[Record]:
    journal = simulate(THREE_STEPS, flaky)
    first = journal[0]
    data = first.data.model_copy(update={"traceparent": PARENT})
    return [Record(0, first.type, first.at, data=data), *journal[1:]]


def commit_all(records: list[Record], state: RunState | None = None) -> RunState:
    state = state or RunState()
    for record in records:
        before, state = state, apply(state, record)
        metrics.record_committed(before, record, state, 0.002)
        tracing.record_committed(UID, before, record, state)
    return state


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing.configure_processor(SimpleSpanProcessor(exporter))
    yield exporter
    tracing.configure_processor(None)


def test_metrics_move_with_a_three_step_run_with_a_retry() -> None:
    journal = simulate(THREE_STEPS, flaky)
    names = [
        ("kurable_workflow_runs_started_total", {"namespace": "ns", "template": ""}),
        (
            "kurable_workflow_runs_finished_total",
            {"namespace": "ns", "template": "", "phase": "Succeeded"},
        ),
        ("kurable_workflow_step_retries_total", {"kind": "http"}),
        ("kurable_workflow_step_duration_seconds_count", {"kind": "set", "outcome": "succeeded"}),
        ("kurable_workflow_step_duration_seconds_count", {"kind": "http", "outcome": "retrying"}),
        ("kurable_workflow_step_duration_seconds_count", {"kind": "http", "outcome": "succeeded"}),
        ("kurable_journal_commit_duration_seconds_count", {}),
    ]
    before = [sample(n, **labels) for n, labels in names]
    commit_all(journal)
    after = [sample(n, **labels) for n, labels in names]
    moved = [b - a for a, b in zip(before, after, strict=True)]
    assert moved == [1, 1, 1, 2, 1, 1, len(journal)]


def test_a_run_is_one_trace_under_its_traceparent_with_a_span_per_attempt(
    spans: InMemorySpanExporter,
) -> None:
    commit_all(journal_with_parent())
    got = spans.get_finished_spans()
    assert {s.context.trace_id for s in got} == {TRACE_ID}
    by_name: dict[str, list[Any]] = {}
    for span in got:
        by_name.setdefault(span.name, []).append(span)
    assert sorted(by_name) == ["step a", "step b", "step c", "workflow w"]
    run_span = by_name["workflow w"][0]
    assert run_span.context.span_id == run_span_id(UID)
    assert run_span.parent is not None and run_span.parent.span_id == 0xB7AD6B7169203331
    attempts = sorted(by_name["step b"], key=lambda s: s.attributes["kurable.step.attempt"])
    assert [s.attributes["kurable.step.outcome"] for s in attempts] == ["retrying", "succeeded"]
    assert [s.context.span_id for s in attempts] == [
        attempt_span_id(UID, "b", 1, 1),
        attempt_span_id(UID, "b", 1, 2),
    ]
    for span in got:
        if span is not run_span:
            assert span.parent is not None and span.parent.span_id == run_span_id(UID)
            assert span.attributes["kurable.step.kind"] in ("set", "http")


def test_the_trace_goes_on_under_the_same_ids_after_a_restart(
    spans: InMemorySpanExporter,
) -> None:
    """The first process commits half the journal; a new one reads it back (nothing is
    emitted for what was read) and commits the rest: one trace, one parent."""
    journal = journal_with_parent()
    half = len(journal) // 2
    state = commit_all(journal[:half])
    first = list(spans.get_finished_spans())
    later = InMemorySpanExporter()
    tracing.configure_processor(SimpleSpanProcessor(later))  # a new process's provider
    replayed = RunState()
    for record in journal[:half]:
        replayed = apply(replayed, record)
    assert replayed == state
    commit_all(journal[half:], replayed)
    second = list(later.get_finished_spans())
    got = first + second
    assert first and second
    assert {s.context.trace_id for s in got} == {TRACE_ID}
    assert {s.name for s in got} == {"step a", "step b", "step c", "workflow w"}


def test_compensations_and_timeouts_are_counted() -> None:
    spec = {
        "steps": [
            {"name": "a", "set": {"x": 1}, "compensate": {"set": {"undo": 1}}},
            {"name": "b", "http": {"url": "http://svc/b"}},
        ]
    }

    def timing_out(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        if act.step.name == "b":
            return None, StepError("Timeout", "attempt 1 timed out")
        return {}, None

    compensated = sample("kurable_workflow_compensations_total", outcome="succeeded")
    timeouts = sample("kurable_workflow_timeouts_total", scope="step")
    commit_all(simulate(spec, timing_out))
    assert sample("kurable_workflow_compensations_total", outcome="succeeded") == compensated + 1
    assert sample("kurable_workflow_timeouts_total", scope="step") == timeouts + 1


def test_attempts_carry_their_span_as_traceparent_only_while_tracing(
    spans: InMemorySpanExporter,
) -> None:
    journal = journal_with_parent()
    state = RunState()
    for record in journal[:1]:
        state = apply(state, record)
    step = decide.resolve(state, "b")
    assert step is not None
    act = decide.Act(step, 2, None, decide.main_scope(state.spec), visit=1)  # type: ignore[arg-type]
    header = tracing.attempt_context(UID, state, act).run(tracing.attempt_traceparent)
    assert header == f"00-{TRACE_ID:032x}-{attempt_span_id(UID, 'b', 1, 2):016x}-01"
    tracing.configure_processor(None)
    assert tracing.attempt_context(UID, state, act).run(tracing.attempt_traceparent) is None
