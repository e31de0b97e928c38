"""Write the golden journals: runs driven through the pure engine, as the executor drives them.

Each scenario below is a definition, its input, the canned answers of the outside world
(HTTP, entity commands, child workflows) and the outside events (signals, suspend, resume,
cancel). `drive` runs it the way `_Run._step_once` / `_harvest` / `_commit` do: ask
`next_decision` (with the steps being performed as `busy`), commit a `Commit`, start an `Act`
and commit its `outcome` once it "returns", sleep to the `Wait`'s time. Each decision is
written down with what it was asked (journal length, clock, flags, busy) and what it
answered, and each Wait/Done with the status `project` shows for it.

Run it ONLY to add a scenario (`python tests/unit/engine/journals/generate.py NAME`), never
to refresh an existing golden: a golden is a journal written by an older operator version,
which a newer one must keep replaying to the same decisions (test_golden.py checks that).
Rewriting a golden because a change decides differently hides exactly the breakage the
goldens exist to catch; keep the old file and add a new format version instead.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from kurable.api.v1alpha1 import WorkflowSpec
from kurable.engine import decide
from kurable.engine.journal import Record, fold, now_rfc3339
from kurable.engine.status import project

HERE = Path(__file__).parent
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
TICK = timedelta(milliseconds=250)
"""How far the clock moves per commit (so that records carry distinct times)."""
WORKFLOW = {"name": "golden", "namespace": "default", "uid": "00000000-0000-4000-8000-000000000001"}
EXECUTOR = "golden-executor"


@dataclass
class Scenario:
    """A run to drive: definition, input, the world's answers, outside events."""

    description: str
    spec: dict[str, Any]
    answers: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Per step name, the answer to each successive attempt: {output} or {error: {kind,
    message, retryable?}}; the last answer repeats."""
    events: list[dict[str, Any]] = field(default_factory=list)
    """Applied once the journal holds `after` records, or earlier when the run waits and
    no action is in flight: {after, signal: {name, payload}} or {after, flags: {suspend,
    cancel}}. The clock jumps to a Wait's time only once no event is left."""
    template: dict[str, Any] | None = None


def summary(decision: decide.Decision) -> dict[str, Any]:
    """A decision as JSON: what the replay compares."""
    if isinstance(decision, decide.Commit):
        wire = record_of(decision, 0, T0).to_json()
        return {"commit": {k: v for k, v in wire.items() if k not in ("seq", "at", "executor")}}
    if isinstance(decision, decide.Act):
        return {
            "act": {
                "step": decision.step.name,
                "attempt": decision.attempt,
                "deadline": now_rfc3339(decision.deadline) if decision.deadline else None,
                "thread": decision.scope.thread,
                "compensating": decision.compensating,
                "visit": decision.visit,
            }
        }
    if isinstance(decision, decide.Wait):
        until = now_rfc3339(decision.until) if decision.until else None
        return {"wait": {"until": until, "reason": decision.reason}}
    return {"done": {}}


def record_of(commit: decide.Commit, seq: int, now: datetime) -> Record:
    return Record(
        seq, commit.type, now_rfc3339(now), commit.step, commit.attempt, commit.data, EXECUTOR
    )


def status_of(records: list[Record], decision: decide.Decision, now: datetime) -> dict[str, Any]:
    return project(
        fold(records),
        generation=1,
        decision=decision,
        previous_conditions=None,
        now=now_rfc3339(now),
        journal_revision=len(records),
    )


def drive(scenario: Scenario, limit: int = 400) -> dict[str, Any]:
    """Run `scenario` to its end; the golden file's content."""
    definition = WorkflowSpec.model_validate(scenario.spec)
    now = T0
    records = [
        record_of(
            decide.start_record(definition, definition.input, WORKFLOW, now, scenario.template),
            0,
            now,
        )
    ]
    flags = decide.Flags()
    events = list(scenario.events)
    calls: dict[str, int] = {}
    acting: dict[str, decide.Act] = {}
    steps: list[dict[str, Any]] = []

    def commit(c: decide.Commit) -> None:
        nonlocal now
        now += TICK
        records.append(record_of(c, len(records), now))

    def apply_event(event: dict[str, Any]) -> None:
        nonlocal flags
        if "signal" in event:
            steps.append({"signal": event["signal"], "records": len(records)})
            commit(decide.Commit("SignalReceived", data=dict(event["signal"])))
        else:
            flags = decide.Flags(**event["flags"])
            steps.append({"flags": event["flags"], "records": len(records)})

    for _ in range(limit):
        while events and len(records) >= events[0]["after"]:
            apply_event(events.pop(0))
        busy = frozenset(acting)
        decision = decide.next_decision(fold(records), now, flags, busy)
        entry: dict[str, Any] = {
            "records": len(records),
            "now": now_rfc3339(now),
            "flags": {"suspend": flags.suspend, "cancel": flags.cancel},
            "busy": sorted(busy),
            "decision": summary(decision),
        }
        steps.append(entry)
        if isinstance(decision, (decide.Wait, decide.Done)):
            entry["status"] = status_of(records, decision, now)
        if isinstance(decision, decide.Done):
            break
        if isinstance(decision, decide.Commit):
            commit(decision)
        elif isinstance(decision, decide.Act):
            acting[decision.step.name] = decision
        elif acting:
            # The first action started returns: commit its outcome (as _harvest does).
            name = next(iter(acting))
            act = acting.pop(name)
            calls[name] = calls.get(name, 0) + 1
            answers = scenario.answers.get(name) or [{"output": {"did": name}}]
            answer = answers[min(calls[name], len(answers)) - 1]
            error = answer.get("error")
            step_error = decide.StepError(**error) if error else None
            steps.append(
                {
                    "outcome": name,
                    "records": len(records),
                    "now": now_rfc3339(now + TICK),
                    "output": answer.get("output"),
                    "error": error,
                }
            )
            commit(decide.outcome(fold(records), act, now + TICK, answer.get("output"), step_error))
        elif events:
            apply_event(events.pop(0))
        elif decision.until is not None:
            now = max(now, decision.until)
        else:
            raise AssertionError(f"{scenario.description}: stuck at {decision}")
    else:
        raise AssertionError(f"{scenario.description}: did not finish in {limit} decisions")
    return {
        "description": scenario.description,
        "formatVersion": 1,
        "spec": scenario.spec,
        "workflow": WORKFLOW,
        "template": scenario.template,
        "answers": scenario.answers,
        "events": scenario.events,
        "records": [r.to_json() for r in records],
        "steps": steps,
    }


def http(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "http": {"url": f"http://svc.example/{name}"}, **extra}


def fail(kind: str, message: str, retryable: bool | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"kind": kind, "message": message}
    if retryable is not None:
        error["retryable"] = retryable
    return {"error": error}


SCENARIOS: dict[str, Scenario] = {
    "set_sleep": Scenario(
        "set, sleep (duration and until), set; output from vars and steps",
        {
            "input": {"n": 2},
            "steps": [
                {"name": "a", "set": {"x": "${ input.n * 10 }"}},
                {"name": "nap", "sleep": {"duration": "5s"}},
                {"name": "later", "sleep": {"until": "2026-01-01T12:01:00Z"}},
                {"name": "b", "set": {"y": "${ vars.x + 1 }", "s": "x=${ vars.x }"}},
            ],
            "output": {"y": "${ vars.y }", "a": "${ steps.a.output.x }"},
        },
    ),
    "wait_signal": Scenario(
        "a wait step takes a signal that arrives while it waits",
        {
            "steps": [
                {"name": "approve", "wait": {"signal": "APPROVE", "timeout": "1h"}},
                {"name": "after", "set": {"ok": "${ steps.approve.output.ok }"}},
            ],
            "output": "${ vars.ok }",
        },
        events=[{"after": 3, "signal": {"name": "APPROVE", "payload": {"ok": True}}}],
    ),
    "signal_early": Scenario(
        "a signal journaled before its wait step starts is taken when it does",
        {
            "steps": [
                {"name": "first", "sleep": {"duration": "10s"}},
                {"name": "go", "wait": {"signal": "GO"}},
            ],
            "output": "${ steps.go.output }",
        },
        events=[{"after": 1, "signal": {"name": "GO", "payload": 7}}],
    ),
    "wait_timeout": Scenario(
        "a wait step with no signal times out and fails the run",
        {"steps": [{"name": "approve", "wait": {"signal": "APPROVE", "timeout": "30s"}}]},
    ),
    "http": Scenario(
        "an http step succeeds; its output feeds the next step",
        {
            "input": {"id": 3},
            "steps": [
                {
                    "name": "call",
                    "timeout": "10s",
                    "http": {"url": "http://svc.example/items/${ input.id }", "body": {"a": 1}},
                },
                {"name": "keep", "set": {"got": "${ steps.call.output.item }"}},
            ],
            "output": "${ vars.got }",
        },
        answers={"call": [{"output": {"item": "three"}}]},
    ),
    "entity": Scenario(
        "an entity command step",
        {
            "steps": [
                {
                    "name": "debit",
                    "entity": {"name": "acct-1", "command": "Withdraw", "input": {"amount": 5}},
                }
            ],
            "output": "${ steps.debit.output }",
        },
        answers={"debit": [{"output": {"balance": 95}}]},
    ),
    "child_workflow": Scenario(
        "a child workflow step: one fails (not retryable), onFailure routes on",
        {
            "steps": [
                {"name": "child", "workflow": {"templateRef": {"name": "t"}, "input": {"x": 1}}},
                {
                    "name": "bad-child",
                    "workflow": {"templateRef": {"name": "t"}},
                    "onFailure": {"goto": "fallback"},
                },
                {"name": "never", "set": {"no": True}},
                {"name": "fallback", "set": {"why": "${ steps['bad-child'].error.kind }"}},
            ],
            "output": {"child": "${ steps.child.output }", "why": "${ vars.why }"},
        },
        answers={
            "child": [{"output": {"answer": 42}}],
            "bad-child": [fail("ChildFailed", "child golden-bad-child ended Failed", False)],
        },
        template={"name": "tpl", "generation": 3, "uid": "tpl-uid"},
    ),
    "retry": Scenario(
        "retries with backoff: the run default, a step policy, retryOn, a 4xx not retried",
        {
            "retry": {"maxAttempts": 3},
            "steps": [
                http("flaky"),
                http(
                    "custom",
                    retry={
                        "maxAttempts": 4,
                        "backoff": {"initial": "2s", "factor": 3, "max": "10s", "jitter": 0.5},
                        "retryOn": ["Boom"],
                    },
                ),
                http("client-error", onFailure={"goto": "done"}),
                {"name": "done", "set": {"finished": True}},
            ],
        },
        answers={
            "flaky": [
                fail("HttpServerError", "503"),
                fail("Timeout", "attempt 2 timed out"),
                {"output": {"ok": 1}},
            ],
            "custom": [fail("Boom", "boom"), fail("Boom", "boom"), {"output": 2}],
            "client-error": [fail("HttpClientError", "400 bad request")],
        },
    ),
    "retry_exhausted": Scenario(
        "a step fails for good after its attempts; the run fails",
        {"steps": [http("down", retry={"maxAttempts": 2})]},
        answers={"down": [fail("ConnectionError", "refused")]},
    ),
    "on_failure_loop": Scenario(
        "onFailure goto and a next loop: steps visited again, when skips, expression error",
        {
            "steps": [
                {"name": "count", "set": {"i": "${ has(vars.i) ? vars.i + 1 : 1 }"}},
                {"name": "again", "when": "${ vars.i < 3 }", "set": {}, "next": "count"},
                {"name": "broken", "set": {"x": "${ vars.nothing }"}, "onFailure": {"goto": "end"}},
                {"name": "skipped", "set": {"y": 1}},
                {"name": "end", "set": {"done": "${ vars.i }"}},
            ],
            "output": "${ vars }",
        },
    ),
    "saga": Scenario(
        "a failure compensates the completed steps in reverse order, with retries",
        {
            "steps": [
                http("reserve", compensate={"http": {"url": "http://svc.example/release"}}),
                {"name": "mark", "set": {"m": 1}, "compensate": {"set": {"unmarked": True}}},
                http(
                    "charge",
                    compensate={
                        "http": {"url": "http://svc.example/refund"},
                        "retry": {"maxAttempts": 2},
                    },
                ),
                http("ship"),
            ],
        },
        answers={
            "ship": [fail("HttpClientError", "409 conflict")],
            "charge:compensate": [fail("HttpServerError", "502"), {"output": "refunded"}],
        },
    ),
    "saga_compensation_fails": Scenario(
        "a compensation that fails for good ends the run CompensationFailed",
        {
            "steps": [
                http("reserve", compensate={"http": {"url": "http://svc.example/release"}}),
                http("ship"),
            ],
        },
        answers={
            "ship": [fail("HttpClientError", "400")],
            "reserve:compensate": [fail("HttpClientError", "404")],
        },
    ),
    "for_each": Scenario(
        "forEach over items with concurrency 2, item and index in expressions",
        {
            "input": {"items": ["a", "b", "c"]},
            "steps": [
                {
                    "name": "each",
                    "forEach": {"items": "${ input.items }", "concurrency": 2},
                    "http": {"url": "http://svc.example/${ item }", "body": {"i": "${ index }"}},
                },
                {"name": "after", "set": {"n": "${ size(steps.each.output) }"}},
            ],
            "output": "${ steps.each.output }",
        },
        answers={"each[1]": [fail("HttpServerError", "503"), {"output": "B"}]},
    ),
    "for_each_set": Scenario(
        "forEach of set steps (committed without actions), then an item failing",
        {
            "input": {"items": [1, 2, 0]},
            "steps": [
                {
                    "name": "double",
                    "forEach": {"items": "${ input.items }"},
                    "set": {"v": "${ item * 2 }"},
                },
                {
                    "name": "divide",
                    "forEach": {"items": "${ input.items }"},
                    "set": {"v": "${ 6 / item }"},
                },
            ],
        },
    ),
    "parallel": Scenario(
        "parallel branches act at the same time and join; a branch steps through a loop",
        {
            "steps": [
                {
                    "name": "fan",
                    "parallel": {
                        "branches": [
                            {
                                "name": "left",
                                "steps": [
                                    {"name": "call", "http": {"url": "http://svc.example/l"}},
                                    {"name": "note", "set": {"l": "${ steps.call.output }"}},
                                ],
                            },
                            {
                                "name": "right",
                                "steps": [
                                    {"name": "nap", "sleep": {"duration": "3s"}},
                                    {"name": "call", "http": {"url": "http://svc.example/r"}},
                                ],
                            },
                            {
                                "name": "gate",
                                "steps": [{"name": "ok", "wait": {"signal": "OK"}}],
                            },
                        ]
                    },
                },
                {"name": "after", "set": {"joined": "${ steps.fan.output }"}},
            ],
            "output": "${ vars.joined }",
        },
        answers={
            "fan.left.call": [{"output": "L"}],
            "fan.right.call": [{"output": "R"}],
        },
        events=[{"after": 6, "signal": {"name": "OK", "payload": "yes"}}],
    ),
    "parallel_fail_fast": Scenario(
        "a failing branch fails the parallel step (failFast) and onFailure routes on",
        {
            "steps": [
                {
                    "name": "fan",
                    "onFailure": {"goto": "recover"},
                    "parallel": {
                        "branches": [
                            {"name": "a", "steps": [http("x")]},
                            {"name": "b", "steps": [http("y")]},
                        ]
                    },
                },
                {"name": "never", "set": {"no": 1}},
                {"name": "recover", "set": {"why": "${ steps.fan.error.message }"}},
            ],
        },
        answers={"fan.a.x": [fail("HttpClientError", "403 forbidden")]},
    ),
    "suspend_resume": Scenario(
        "a suspended run waits before its next step, then resumes",
        {
            "steps": [
                {"name": "a", "set": {"x": 1}},
                {"name": "b", "set": {"y": 2}},
            ],
        },
        events=[
            {"after": 1, "flags": {"suspend": True, "cancel": False}},
            {"after": 99, "flags": {"suspend": False, "cancel": False}},
        ],
    ),
    "cancel": Scenario(
        "cancelling a sleeping run compensates what completed, then ends Cancelled",
        {
            "steps": [
                {"name": "book", "set": {"b": 1}, "compensate": {"set": {"unbooked": True}}},
                {"name": "nap", "sleep": {"duration": "1h"}},
            ],
        },
        events=[{"after": 3, "flags": {"suspend": False, "cancel": True}}],
    ),
    "timeout": Scenario(
        "the workflow times out while an attempt is in flight and while sleeping",
        {
            "timeout": "30s",
            "steps": [
                http("slow", timeout="1m"),
                {"name": "nap", "sleep": {"duration": "1h"}},
            ],
        },
        answers={"slow": [{"output": "fine"}]},
    ),
    "output_error": Scenario(
        "an output expression that fails fails the run after its steps",
        {"steps": [{"name": "a", "set": {"x": 1}}], "output": "${ vars.missing.deeper }"},
    ),
}


def main(names: list[str]) -> None:
    for name in names:
        path = HERE / f"{name}.json"
        if path.exists():
            raise SystemExit(f"{path} exists: goldens are never rewritten (see the docstring)")
        golden = drive(SCENARIOS[name])
        path.write_text(json.dumps(golden, indent=1, sort_keys=False) + "\n")
        print(f"wrote {path} ({len(golden['records'])} records)")


if __name__ == "__main__":
    main(sys.argv[1:] or sorted(SCENARIOS))
