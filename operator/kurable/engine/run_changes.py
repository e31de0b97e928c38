"""The durable per-template stream of run changes: which journal records make one, and
what it says (views over runs and consumers of runs read it).

A change is written in the same etcd transaction as the journal record that changes the
run's phase (kurable.store.journal.Journal.append), at
`keys.run_change(prefix, namespace, template, uid, seq)`. Suspension is not journaled
(it is `spec.suspend`), so the records that change a run's phase are its start (Running)
and its end (Succeeded, Failed, Cancelled, Invalid).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .journal import Record, RunState

INLINE_TEMPLATE = "-"
"""The template segment of a run with an inline definition (no templateRef)."""

PHASE_RECORDS = frozenset({"WorkflowStarted", "WorkflowFinished"})
"""The journal record types that change a run's phase."""


def template_of(state: RunState) -> str:
    """The stream a run's changes go to: its templateRef name, or `-` (inline)."""
    name = (state.template or {}).get("name")
    return str(name) if name else INLINE_TEMPLATE


def run_change(
    state: RunState, record: Record, labels: Mapping[str, str] | None
) -> dict[str, Any] | None:
    """The change `record` makes, given the state *after* it (`apply`) and the run's
    labels; None when the record does not change the run's phase.

    Shape (JSON): {"run": {name, namespace, uid, labels, phase, startedAt, finishedAt,
    template: {name, generation} | null}, "input", "output", "vars", "error", "seq", "at"}.
    """
    if record.type not in PHASE_RECORDS:
        return None
    template = state.template
    return {
        "run": {
            "name": state.workflow.get("name"),
            "namespace": state.workflow.get("namespace"),
            "uid": state.workflow.get("uid"),
            "labels": dict(labels or {}),
            "phase": state.phase if state.finished else "Running",
            "startedAt": state.started_at,
            "finishedAt": state.finished_at,
            "template": (
                {"name": template.get("name"), "generation": template.get("generation")}
                if template
                else None
            ),
        },
        "input": state.input,
        "output": state.output,
        "vars": dict(state.vars),
        "error": state.error,
        "seq": record.seq,
        "at": record.at,
    }
