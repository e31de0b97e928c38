"""The diagram model (kurable.engine.graph) and its Mermaid and dot forms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from kurable.api.v1alpha1 import WorkflowSpec, WorkflowTemplateSpec
from kurable.engine import graph as diagrams
from kurable.engine.journal import fold

from .test_decide import HELLO, T0, run, start

EXAMPLES = Path(__file__).parents[3] / "examples"


def test_a_sequence_is_start_steps_end_in_order() -> None:
    g = diagrams.graph(WorkflowSpec.model_validate(HELLO))
    assert [n.id for n in g.nodes] == ["start", "a", "nap", "b", "end"]
    assert [(e.source, e.target) for e in g.edges] == [
        ("start", "a"),
        ("a", "nap"),
        ("nap", "b"),
        ("b", "end"),
    ]
    assert all(n.phase is None for n in g.nodes)


def test_a_run_colours_each_step_by_its_phase_from_the_journal() -> None:
    journal, _ = run(start(HELLO), T0)  # waits in the sleep
    g = diagrams.graph(WorkflowSpec.model_validate(HELLO), fold(journal))
    phases = {n.id: n.phase for n in g.nodes}
    assert phases == {
        "start": None,
        "a": "Succeeded",
        "nap": "Waiting",
        "b": "Pending",
        "end": None,
    }
    text = diagrams.mermaid(g)
    assert "classDef Waiting fill:#fde68a" in text
    assert re.search(r"class n2 Waiting$", text, re.M)
    assert 'n2["nap (sleep) [Waiting]"]' in text
    assert 'fillcolor="#86efac"' in diagrams.dot(g)


def test_retries_show_the_attempts_and_compensations_are_dashed_nodes() -> None:
    spec = WorkflowSpec.model_validate(
        {
            "steps": [
                {"name": "pay", "set": {"x": 1}, "compensate": {"set": {"y": 1}}},
                {"name": "ship", "http": {"url": "http://x"}, "onFailure": {"goto": "pay"}},
            ]
        }
    )
    g = diagrams.graph_with_phases(
        spec, {"pay": ("Succeeded", 1), "ship": ("Retrying", 3), "pay:compensate": ("Running", 1)}
    )
    nodes = {n.id: n for n in g.nodes}
    assert nodes["pay:compensate"].kind == "compensation"
    assert nodes["ship"].attempts == 3
    kinds = {(e.source, e.target): e.kind for e in g.edges}
    assert kinds[("pay", "pay:compensate")] == "compensate"
    assert kinds[("ship", "pay")] == "onFailure"
    text = diagrams.mermaid(g)
    assert '[/"pay:compensate (set) [Running]"/]' in text
    assert "[Retrying x3]" in text
    assert " -.->|undo| " in text and " -.->|on failure| " in text


def test_a_parallel_step_forks_to_each_branch_and_joins() -> None:
    spec = WorkflowSpec.model_validate(
        {
            "steps": [
                {
                    "name": "p",
                    "parallel": {
                        "branches": [
                            {"name": "left", "steps": [{"name": "l1", "set": {}}]},
                            {"name": "right", "steps": [{"name": "r1", "set": {}}]},
                        ]
                    },
                },
                {"name": "after", "set": {}},
            ]
        }
    )
    edges = {(e.source, e.target, e.kind, e.label) for e in diagrams.graph(spec).edges}
    assert ("p", "l1", "branch", "left") in edges
    assert ("p", "r1", "branch", "right") in edges
    assert ("l1", "p:join", "next", None) in edges
    assert ("p:join", "after", "next", None) in edges


def _definitions() -> list[tuple[str, WorkflowSpec]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "WorkflowTemplate":
                steps = WorkflowTemplateSpec.model_validate(doc["spec"]).steps
                found.append((str(path.relative_to(EXAMPLES)), WorkflowSpec(steps=steps)))
            elif doc.get("kind") == "Workflow" and doc["spec"].get("steps"):
                found.append(
                    (str(path.relative_to(EXAMPLES)), WorkflowSpec.model_validate(doc["spec"]))
                )
    return found


@pytest.mark.parametrize(("where", "definition"), _definitions(), ids=lambda v: str(v)[:40])
def test_every_example_draws_with_every_edge_between_drawn_nodes(
    where: str, definition: WorkflowSpec
) -> None:
    """The shape is checked here; tests/integration/test_console.py renders each
    example's Mermaid text with Mermaid itself in the browser."""
    g = diagrams.graph(definition)
    ids = {n.id for n in g.nodes}
    assert len(ids) == len(g.nodes), where
    for edge in g.edges:
        assert edge.source in ids and edge.target in ids, (where, edge)
    text = diagrams.mermaid(g)
    declared = set(re.findall(r"^  (n\d+)[\[\(\{]", text, re.M))
    used = set(re.findall(r"\b(n\d+)\b", text))
    assert used <= declared, where
    assert diagrams.dot(g).count("{") == diagrams.dot(g).count("}")
