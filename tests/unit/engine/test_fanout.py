"""parallel and forEach: branches and items with their own positions, joined at the end."""

from __future__ import annotations

from typing import Any

from kurable.engine import decide
from kurable.engine.decide import StepError
from kurable.engine.journal import fold

from .test_decide import T0, run, start, to_record
from .test_failures import simulate


def http(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "http": {"url": f"http://svc/{name}"}, **extra}


def test_parallel_branches_all_run_and_join_their_outputs() -> None:
    spec = {
        "steps": [
            {
                "name": "fan",
                "parallel": {
                    "branches": [
                        {
                            "name": "left",
                            "steps": [
                                http("a"),
                                {"name": "b", "set": {"l": "${ steps.a.output.did }"}},
                            ],
                        },
                        {"name": "right", "steps": [http("c")]},
                    ]
                },
            },
            {"name": "after", "set": {"joined": "${ steps.fan.output }"}},
        ]
    }
    journal = simulate(spec)
    state = fold(journal)
    assert state.phase == "Succeeded"
    assert state.steps["fan"].output == {
        "left": {"l": "fan.left.a"},
        "right": {"did": "fan.right.c"},
    }
    assert state.vars["joined"]["right"] == {"did": "fan.right.c"}


def test_parallel_branches_start_before_either_finishes() -> None:
    spec = {
        "steps": [
            {
                "name": "fan",
                "parallel": {
                    "branches": [
                        {"name": "x", "steps": [http("a")]},
                        {"name": "y", "steps": [http("b")]},
                    ]
                },
            }
        ]
    }
    journal = start(spec)
    busy: set[str] = set()
    acts = []
    for _ in range(10):
        decision = decide.next_decision(fold(journal), T0, busy=frozenset(busy))
        if isinstance(decision, decide.Commit):
            journal.append(to_record(decision, len(journal), T0))
        elif isinstance(decision, decide.Act):
            busy.add(decision.step.name)
            acts.append(decision.step.name)
        else:
            break
    assert acts == ["fan.x.a", "fan.y.b"]  # both acting at once
    assert isinstance(decision, decide.Wait)


def test_fail_fast_fails_the_parallel_step_and_compensates_finished_branches() -> None:
    def world(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
        if act.step.name == "fan.bad.boom":
            return None, StepError("HttpClientError", "400")
        return "ok", None

    spec = {
        "steps": [
            {
                "name": "fan",
                "parallel": {
                    "branches": [
                        {
                            "name": "good",
                            "steps": [http("book", compensate={"set": {"undone": True}})],
                        },
                        {"name": "bad", "steps": [http("boom")]},
                    ]
                },
            }
        ]
    }
    journal = simulate(spec, world)
    state = fold(journal)
    assert state.phase == "Failed" and state.reason == "Compensated"
    assert state.error is not None and "fan.bad.boom" in state.error["message"]
    assert state.compensated == ("fan.good.book",)


def test_for_each_runs_the_step_per_item_with_bounded_concurrency() -> None:
    spec = {
        "input": {"sizes": [1, 2, 3, 4, 5]},
        "steps": [http("resize", forEach={"items": "${ input.sizes }", "concurrency": 2})],
    }
    journal = start(spec)
    busy: set[str] = set()
    in_flight_max = 0
    acts: list[decide.Act] = []
    while True:
        decision = decide.next_decision(fold(journal), T0, busy=frozenset(busy))
        if isinstance(decision, decide.Commit):
            journal.append(to_record(decision, len(journal), T0))
            continue
        if isinstance(decision, decide.Act):
            busy.add(decision.step.name)
            acts.append(decision)
            in_flight_max = max(in_flight_max, len(busy))
            continue
        if isinstance(decision, decide.Done):
            break
        # Wait: finish the oldest act.
        act = acts.pop(0)
        busy.discard(act.step.name)
        commit = decide.outcome(fold(journal), act, T0, {"item": act.step.name})
        journal.append(to_record(commit, len(journal), T0))
    state = fold(journal)
    assert state.phase == "Succeeded"
    assert in_flight_max == 2
    assert state.steps["resize"].output == [{"item": f"resize[{i}]"} for i in range(5)]


def test_for_each_items_and_index_are_visible_to_expressions() -> None:
    spec = {
        "input": {"names": ["ada", "bob"]},
        "steps": [
            {
                "name": "greet",
                "forEach": {"items": "${ input.names }"},
                "set": {"hello": "${ string(index) + ':' + item }"},
            }
        ],
    }
    journal, _ = run(start(spec), T0)
    state = fold(journal)
    assert state.steps["greet"].output == [{"hello": "0:ada"}, {"hello": "1:bob"}]


def test_for_each_items_are_pinned_in_the_journal() -> None:
    spec = {
        "input": {"xs": [1, 2]},
        "steps": [
            {"name": "each", "forEach": {"items": "${ input.xs }"}, "set": {"v": "${ item }"}}
        ],
    }
    journal, _ = run(start(spec), T0)
    started = next(r for r in journal if r.type == "StepStarted" and r.step == "each")
    assert started.data.items == [1, 2]


def test_for_each_over_a_non_list_fails_clearly() -> None:
    spec = {"steps": [{"name": "each", "forEach": {"items": "${ 3 }"}, "set": {}}]}
    journal, _ = run(start(spec), T0)
    state = fold(journal)
    assert state.phase == "Failed"
    assert state.error is not None and "must be a list" in state.error["message"]
