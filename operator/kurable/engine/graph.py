"""A workflow definition as a diagram: nodes, edges and each step's phase.

One model for every picture of a run: `kurable graph` prints it as a Mermaid `flowchart`
or Graphviz `dot`, and the console draws it as SVG. Pure: a definition (and, for a run,
its replayed journal) in, plain data out.

Shape of the graph:
- `start` and `end` nodes; one node per step (its id is the step's name, unique in a
  definition), one per compensation (`<step>:compensate`), one join per parallel step
  (`<step>:join`).
- Edges: `next` (the order of a sequence, or a step's `next`), `branch` (a parallel step to
  the first step of each branch), `join` (a branch's end to its join), `onFailure` (a
  step's `onFailure.goto`), `compensate` (a step to its compensation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from kurable.api.v1alpha1 import WorkflowSpec
from kurable.api.v1alpha1.workflow import Step

from .journal import RunState

NodeKind = Literal["start", "end", "step", "compensation", "join"]
EdgeKind = Literal["next", "branch", "join", "onFailure", "compensate"]

PHASE_COLOURS: Mapping[str, str] = {
    "Pending": "#e5e7eb",
    "Running": "#93c5fd",
    "Waiting": "#fde68a",
    "Retrying": "#fdba74",
    "Succeeded": "#86efac",
    "Failed": "#fca5a5",
    "Skipped": "#d1d5db",
}
"""Fill colour (CSS hex) of a node by its step's phase; the console and both text formats
use these."""


@dataclass(frozen=True)
class Node:
    """One box of the diagram."""

    id: str
    label: str
    kind: NodeKind
    step_kind: str | None = None
    """The step's action (`http`, `set`, `parallel`, ...); None for start, end and joins."""
    phase: str | None = None
    """The step's phase in the run (StepPhase); None without a run or for start/end/join."""
    attempts: int = 0
    """Attempts of the step's latest visit (more than 1: it was retried)."""
    for_each: bool = False


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    kind: EdgeKind
    label: str | None = None


@dataclass(frozen=True)
class Graph:
    """A definition's diagram; `nodes` in the definition's order."""

    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    phase: str | None = None
    """The run's phase, when drawn for a run."""

    def to_json(self) -> dict[str, Any]:
        """{nodes: [{id, label, kind, stepKind, phase, attempts, forEach}], edges: [{source,
        target, kind, label}], phase, colours: {phase: fill}} for the console."""
        return {
            "nodes": [
                {
                    "id": n.id,
                    "label": n.label,
                    "kind": n.kind,
                    "stepKind": n.step_kind,
                    "phase": n.phase,
                    "attempts": n.attempts,
                    "forEach": n.for_each,
                }
                for n in self.nodes
            ],
            "edges": [
                {"source": e.source, "target": e.target, "kind": e.kind, "label": e.label}
                for e in self.edges
            ],
            "phase": self.phase,
            "colours": dict(PHASE_COLOURS),
        }


@dataclass
class _Builder:
    phases: Mapping[str, tuple[str, int]]
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, node: Node) -> None:
        self.nodes.append(node)

    def step(self, step: Step, compensation_of: str | None = None) -> None:
        name = f"{compensation_of}:compensate" if compensation_of else step.name
        phase, attempts = self.phases.get(name, (None, 0))
        if self.phases and phase is None:
            phase = "Pending"
        self.node(
            Node(
                id=name,
                label=name,
                kind="compensation" if compensation_of else "step",
                step_kind=step.action,
                phase=phase,
                attempts=attempts,
                for_each=step.for_each is not None,
            )
        )

    def sequence(
        self,
        steps: Sequence[Step],
        entry: str,
        exit: str,
        kind: EdgeKind = "next",
        label: str | None = None,
    ) -> None:
        """Steps run in order after `entry` (an edge of `kind`, `label` into the first);
        the last one (unless it jumps with `next`) goes to `exit`."""
        if not steps:
            self.edges.append(Edge(entry, exit, kind, label))
            return
        self.edges.append(Edge(entry, steps[0].name, kind, label))
        for i, step in enumerate(steps):
            after = steps[i + 1].name if i + 1 < len(steps) else exit
            self.step(step)
            source = step.name
            if step.parallel is not None:
                source = f"{step.name}:join"
                for branch in step.parallel.branches:
                    self.sequence(branch.steps, step.name, source, "branch", branch.name)
                self.node(Node(id=source, label="join", kind="join"))
            if step.next is not None:
                self.edges.append(Edge(source, step.next, "next", "next"))
            else:
                self.edges.append(Edge(source, after, "next", "when" if step.when else None))
            if step.on_failure is not None:
                self.edges.append(Edge(step.name, step.on_failure.goto, "onFailure", "on failure"))
            if step.compensate is not None:
                self.step(step.compensate, compensation_of=step.name)
                self.edges.append(Edge(step.name, f"{step.name}:compensate", "compensate", "undo"))


def graph(definition: WorkflowSpec, state: RunState | None = None) -> Graph:
    """The diagram of `definition`; with the run's replayed journal (`state`), each step
    node carries its phase (Pending when not reached yet) and attempts."""
    phases: dict[str, tuple[str, int]] = {}
    if state is not None:
        phases = {name: (s.phase, s.attempts) for name, s in state.steps.items()}
    return graph_with_phases(definition, phases, state.phase if state is not None else None)


def graph_with_phases(
    definition: WorkflowSpec,
    phases: Mapping[str, tuple[str, int]],
    run_phase: str | None = None,
) -> Graph:
    """As `graph`, with each step's (phase, attempts) given by name (e.g. from a run's
    `status.steps`); an empty mapping draws the definition alone."""
    builder = _Builder(phases)
    builder.node(Node(id="start", label="start", kind="start"))
    builder.sequence(definition.steps or [], "start", "end")
    builder.node(Node(id="end", label="end", kind="end"))
    return Graph(tuple(builder.nodes), tuple(builder.edges), run_phase)


def status_phases(steps: Sequence[Mapping[str, Any]]) -> dict[str, tuple[str, int]]:
    """(phase, attempts) by step name from a Workflow's `status.steps`."""
    return {
        str(s["name"]): (str(s.get("phase") or "Pending"), int(s.get("attempts") or 0))
        for s in steps
        if s.get("name")
    }


# -- text formats ----------------------------------------------------------------------


def _ids(g: Graph) -> dict[str, str]:
    """Short identifiers safe in Mermaid and dot (step names may hold `-` and `:`)."""
    return {n.id: f"n{i}" for i, n in enumerate(g.nodes)}


def caption(node: Node) -> str:
    """`charge (http) [Retrying x2]`: name, step kind, and the phase with attempts if
    retried."""
    text = node.label
    if node.step_kind is not None:
        text += f" ({node.step_kind}{' forEach' if node.for_each else ''})"
    if node.phase is not None:
        text += f" [{node.phase}{f' x{node.attempts}' if node.attempts > 1 else ''}]"
    return text


def mermaid(g: Graph) -> str:
    """The graph as a Mermaid `flowchart TD`: steps coloured by phase (classDef per
    phase), compensations and failure jumps as dotted edges."""
    ids = _ids(g)
    lines = ["flowchart TD"]
    for node in g.nodes:
        text = caption(node).replace('"', "#quot;")
        shape = {
            "start": f'(["{text}"])',
            "end": f'(["{text}"])',
            "join": f'{{{{"{text}"}}}}',
            "compensation": f'[/"{text}"/]',
        }.get(node.kind, f'["{text}"]')
        lines.append(f"  {ids[node.id]}{shape}")
    for edge in g.edges:
        if edge.source not in ids or edge.target not in ids:
            continue
        arrow = "-.->" if edge.kind in ("onFailure", "compensate") else "-->"
        label = f"|{edge.label}|" if edge.label else ""
        lines.append(f"  {ids[edge.source]} {arrow}{label} {ids[edge.target]}")
    used = sorted({n.phase for n in g.nodes if n.phase is not None})
    for phase in used:
        lines.append(f"  classDef {phase} fill:{PHASE_COLOURS.get(phase, '#ffffff')}")
    for phase in used:
        members = ",".join(ids[n.id] for n in g.nodes if n.phase == phase)
        lines.append(f"  class {members} {phase}")
    return "\n".join(lines) + "\n"


def dot(g: Graph) -> str:
    """The graph as a Graphviz `digraph`, filled by phase."""

    def quote(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    ids = _ids(g)
    lines = ["digraph workflow {", "  rankdir=TB;", "  node [shape=box, style=rounded];"]
    for node in g.nodes:
        attrs = [f"label={quote(caption(node))}"]
        if node.kind in ("start", "end"):
            attrs.append("shape=oval")
        elif node.kind == "join":
            attrs.append("shape=hexagon")
        elif node.kind == "compensation":
            attrs.append("shape=parallelogram")
        if node.phase is not None:
            attrs.append(f'style="rounded,filled" fillcolor={quote(PHASE_COLOURS[node.phase])}')
        lines.append(f"  {ids[node.id]} [{', '.join(attrs)}];")
    for edge in g.edges:
        if edge.source not in ids or edge.target not in ids:
            continue
        attrs = []
        if edge.label:
            attrs.append(f"label={quote(edge.label)}")
        if edge.kind in ("onFailure", "compensate"):
            attrs.append("style=dashed")
        suffix = f" [{', '.join(attrs)}]" if attrs else ""
        lines.append(f"  {ids[edge.source]} -> {ids[edge.target]}{suffix};")
    lines.append("}")
    return "\n".join(lines) + "\n"
