"""The deciding core: what a run does next, from its journal alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kurable.api.v1alpha1 import WorkflowSpec
from kurable.engine import decide
from kurable.engine.journal import Record, fold, now_rfc3339

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
NOT_SUSPENDED = decide.Flags()
WORKFLOW = {"name": "w", "namespace": "ns", "uid": "u-1"}


def start(spec: dict[str, Any]) -> list[Record]:
    definition = WorkflowSpec.model_validate(spec)
    commit = decide.start_record(definition, definition.input, WORKFLOW, T0)
    return [to_record(commit, 0, T0)]


def to_record(commit: decide.Commit, seq: int, now: datetime) -> Record:
    return Record(seq, commit.type, now_rfc3339(now), commit.step, commit.attempt, commit.data)


def run(
    journal: list[Record],
    now: datetime,
    flags: decide.Flags = NOT_SUSPENDED,
    max_steps: int = 1000,
) -> tuple[list[Record], decide.Decision]:
    """Apply decisions at `now` until the run waits or is done."""
    journal = list(journal)
    for _ in range(max_steps):
        decision = decide.next_decision(fold(journal), now, flags)
        if not isinstance(decision, decide.Commit):
            return journal, decision
        journal.append(to_record(decision, len(journal), now))
    raise AssertionError("run did not settle")


HELLO = {
    "input": {"n": 2},
    "steps": [
        {"name": "a", "set": {"x": "${ input.n * 10 }"}},
        {"name": "nap", "sleep": {"duration": "5s"}},
        {"name": "b", "set": {"y": "${ vars.x + 1 }", "s": "x=${ vars.x }"}},
    ],
    "output": {"y": "${ vars.y }", "a": "${ steps.a.output.x }"},
}


def test_set_sleep_set_runs_to_success_with_the_timer_in_the_journal() -> None:
    journal, decision = run(start(HELLO), T0)
    assert isinstance(decision, decide.Wait)
    assert decision.until == T0 + timedelta(seconds=5)
    assert [r.type for r in journal] == ["WorkflowStarted", "StepCompleted", "StepStarted"]
    assert journal[2].data.wake_at == now_rfc3339(T0 + timedelta(seconds=5))

    journal, decision = run(journal, T0 + timedelta(seconds=5))
    assert isinstance(decision, decide.Done)
    state = fold(journal)
    assert state.phase == "Succeeded"
    assert state.output == {"y": 21, "a": 20}
    assert state.vars == {"x": 20, "y": 21, "s": "x=20"}
    assert state.completed == ("a", "nap", "b")


def test_timer_is_not_restarted_by_a_later_decision() -> None:
    journal, _ = run(start(HELLO), T0)
    # A restarted executor at T0+3s sees the same deadline, not a fresh 5 s.
    _, decision = run(journal, T0 + timedelta(seconds=3))
    assert isinstance(decision, decide.Wait)
    assert decision.until == T0 + timedelta(seconds=5)


def test_when_false_skips_the_step() -> None:
    spec = {
        "steps": [
            {"name": "a", "set": {"x": 1}},
            {"name": "b", "when": "vars.x > 1", "set": {"x": 100}},
            {"name": "c", "when": "${ vars.x == 1 }", "set": {"y": 2}},
        ]
    }
    journal, _ = run(start(spec), T0)
    state = fold(journal)
    assert state.steps["b"].phase == "Skipped"
    assert state.vars == {"x": 1, "y": 2}
    assert state.phase == "Succeeded"


def test_next_jumps_and_loops_until_a_condition() -> None:
    spec = {
        "steps": [
            {"name": "init", "set": {"i": 0}},
            {"name": "inc", "set": {"i": "${ vars.i + 1 }"}},
            {"name": "again", "when": "vars.i < 3", "set": {}, "next": "inc"},
            {"name": "end", "set": {"done": True}},
        ]
    }
    journal, _ = run(start(spec), T0)
    state = fold(journal)
    assert state.vars == {"i": 3, "done": True}
    assert state.steps["inc"].visits == 3


def test_expression_error_fails_the_run_naming_step_and_field() -> None:
    spec = {"steps": [{"name": "calc", "set": {"total": "${ input.missing + 1 }"}}]}
    journal, decision = run(start(spec), T0)
    assert isinstance(decision, decide.Done)
    state = fold(journal)
    assert state.phase == "Failed"
    assert state.error is not None
    assert state.error["step"] == "calc"
    assert "calc.set.total" in state.error["message"]


def test_suspend_pauses_before_the_next_step_and_resumes() -> None:
    journal, _ = run(start(HELLO), T0)  # sleeping in "nap"
    later = T0 + timedelta(seconds=6)
    # The timer in flight completes, but the following step does not start.
    journal, decision = run(journal, later, decide.Flags(suspend=True))
    assert decision == decide.Wait(None, "Suspended")
    assert fold(journal).position == "b"
    journal, decision = run(journal, later, decide.Flags(suspend=False))
    assert isinstance(decision, decide.Done)
    assert fold(journal).phase == "Succeeded"


def test_a_suspend_during_a_sleep_shows_at_once_and_the_timer_keeps_its_time() -> None:
    journal, _ = run(start(HELLO), T0)  # sleeping in "nap" until T0 + 5 s
    _, decision = run(journal, T0 + timedelta(seconds=1), decide.Flags(suspend=True))
    assert isinstance(decision, decide.Wait)
    assert decision.until == T0 + timedelta(seconds=5)
    assert decision.reason.startswith("Suspended (sleeping until ")


def test_acting_steps_journal_their_start_then_ask_the_executor_to_act() -> None:
    spec = {"steps": [{"name": "call", "http": {"url": "http://x"}, "timeout": "10s"}]}
    journal, decision = run(start(spec), T0)
    assert [r.type for r in journal][-1] == "StepStarted"
    assert isinstance(decision, decide.Act)
    assert decision.step.name == "call" and decision.attempt == 1
    assert decision.deadline == T0 + timedelta(seconds=10)


def test_sleep_until_a_timestamp_from_input() -> None:
    wake = now_rfc3339(T0 + timedelta(minutes=1))
    spec = {"input": {"at": wake}, "steps": [{"name": "s", "sleep": {"until": "${ input.at }"}}]}
    _, decision = run(start(spec), T0)
    assert isinstance(decision, decide.Wait)
    assert decision.until == T0 + timedelta(minutes=1)


# Recovery: a run restarted from any prefix of its journal ends exactly as an
# uninterrupted run, and never rewrites what was already committed.
steps_strategy = st.lists(
    st.one_of(
        st.builds(lambda v: {"set": {"v": v}}, st.integers(-5, 5)),
        st.builds(lambda s: {"sleep": {"duration": f"{s}s"}}, st.integers(0, 3)),
        st.builds(lambda v: {"set": {"w": "${ has(vars.v) ? vars.v * 2 : 0 }"}}, st.integers()),
    ),
    min_size=1,
    max_size=8,
)


def _drive(journal: list[Record], clock: datetime) -> list[Record]:
    while True:
        journal, decision = run(journal, clock)
        if isinstance(decision, decide.Done):
            return journal
        assert isinstance(decision, decide.Wait) and decision.until is not None
        clock = max(clock, decision.until)


@settings(max_examples=60, deadline=None)
@given(steps=steps_strategy, crash_at=st.integers(0, 40))
def test_restart_from_any_journal_prefix_reaches_the_same_end(
    steps: list[dict[str, Any]], crash_at: int
) -> None:
    spec = {"steps": [{"name": f"s{i}", **s} for i, s in enumerate(steps)]}
    full = _drive(start(spec), T0)
    prefix = full[: max(1, min(crash_at, len(full)))]
    # The restarted executor resumes at the moment of the crash (the last commit).
    crash_time = datetime.fromisoformat(prefix[-1].at.replace("Z", "+00:00"))
    resumed = _drive(prefix, crash_time)
    assert resumed[: len(prefix)] == prefix
    assert [(r.type, r.step, r.data) for r in resumed] == [(r.type, r.step, r.data) for r in full]
    assert fold(resumed).phase == "Succeeded"


def test_an_endless_loop_fails_clearly_at_the_transition_limit(monkeypatch: Any) -> None:
    monkeypatch.setattr(decide, "MAX_TRANSITIONS", 50)
    spec = {"steps": [{"name": "spin", "set": {}, "next": "spin"}]}
    journal, decision = run(start(spec), T0)
    state = fold(journal)
    assert isinstance(decision, decide.Done)
    assert state.phase == "Failed"
    assert state.error is not None and state.error["reason"] == "TransitionLimit"


def test_idempotency_keys_are_per_visit_and_stable_across_attempts() -> None:
    spec = {
        "steps": [
            {"name": "i", "set": {"n": 0}},
            {"name": "call", "http": {"url": "http://x"}},
            {"name": "inc", "set": {"n": "${ vars.n + 1 }"}},
            {"name": "loop", "when": "vars.n < 2", "set": {}, "next": "call"},
        ]
    }
    keys = []
    journal = start(spec)
    for _ in range(20):
        journal, decision = run(journal, T0)
        if not isinstance(decision, decide.Act):
            break
        keys.append(decision.idempotency_key("uid"))
        commit = decide.outcome(fold(journal), decision, T0, "ok")
        journal.append(to_record(commit, len(journal), T0))
    assert keys == ["uid/call", "uid/call#2"]
