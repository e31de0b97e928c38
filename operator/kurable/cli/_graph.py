"""`kurable graph`: a workflow definition, or a run with its steps' phases, as a diagram."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kurable.api.v1alpha1 import WORKFLOW, WORKFLOW_TEMPLATE, WorkflowSpec, WorkflowTemplateSpec
from kurable.engine import graph as diagrams
from kurable.engine.journal import RunState, fold
from kurable.store.journal import EtcdConfig, Journal, connect

from ._errors import UserError
from ._kube import get_object

WORKFLOW_SPELLINGS = ("workflow", "workflows", "wf", "kwf")
TEMPLATE_SPELLINGS = ("workflowtemplate", "workflowtemplates", "wft", "kwft")


def graph(args: argparse.Namespace) -> int:
    if args.filename:
        drawn = from_manifests(Path(args.filename), args.ref)
    elif args.ref:
        drawn = from_cluster(args.ref, args.namespace)
    else:
        raise UserError("name workflow/NAME or workflowtemplate/NAME, or give -f FILE")
    print(render(drawn, args.format), end="")
    return 0


def render(drawn: diagrams.Graph, format: str) -> str:
    return diagrams.dot(drawn) if format == "dot" else diagrams.mermaid(drawn)


def _definition(kind: str, spec: dict[str, Any], where: str) -> WorkflowSpec:
    try:
        if kind == "WorkflowTemplate":
            steps = WorkflowTemplateSpec.model_validate(spec).steps
            return WorkflowSpec(steps=steps)
        return WorkflowSpec.model_validate(spec)
    except ValidationError as e:
        raise UserError(f"{where}: not a valid {kind}: {e}") from None


def from_manifests(path: Path, ref: str | None) -> diagrams.Graph:
    """The diagram of the Workflow or WorkflowTemplate in a manifest file (the one `ref`
    names, else the first); a run of a template in the same file gets its steps."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    wanted = None
    if ref:
        spelled, _, name = ref.partition("/")
        wanted = name or spelled
    templates = {d["metadata"]["name"]: d for d in documents if d.get("kind") == "WorkflowTemplate"}
    for doc in documents:
        if doc.get("kind") not in ("Workflow", "WorkflowTemplate"):
            continue
        if wanted is not None and doc.get("metadata", {}).get("name") != wanted:
            continue
        spec = dict(doc.get("spec") or {})
        ref_name = (spec.get("templateRef") or {}).get("name")
        if doc["kind"] == "Workflow" and ref_name in templates:
            definition = _definition("WorkflowTemplate", templates[ref_name]["spec"], str(path))
        else:
            definition = _definition(doc["kind"], spec, str(path))
        return diagrams.graph(definition)
    raise UserError(f"{path}: no Workflow or WorkflowTemplate{f' {wanted!r}' if wanted else ''}")


def from_cluster(ref: str, namespace: str | None) -> diagrams.Graph:
    """A WorkflowTemplate's diagram, or a run's with each step's phase (from its journal
    when etcd is reachable, else from its status)."""
    if ref.partition("/")[0].lower() in TEMPLATE_SPELLINGS:
        _, _, template = get_object(ref, namespace, WORKFLOW_TEMPLATE, TEMPLATE_SPELLINGS)
        return diagrams.graph(_definition("WorkflowTemplate", template.get("spec") or {}, ref))
    _, namespace, run = get_object(ref, namespace, WORKFLOW, WORKFLOW_SPELLINGS)
    state = _journal_state(run["metadata"]["uid"])
    if state is not None and state.spec is not None:
        return diagrams.graph(state.spec, state)
    status = run.get("status") or {}
    spec = dict(run.get("spec") or {})
    definition = _definition("Workflow", spec, ref)
    if definition.template_ref is not None:
        _, _, template = get_object(
            f"workflowtemplate/{definition.template_ref.name}",
            namespace,
            WORKFLOW_TEMPLATE,
            TEMPLATE_SPELLINGS,
        )
        definition = _definition("WorkflowTemplate", template.get("spec") or {}, ref)
    phases = diagrams.status_phases(status.get("steps") or [])
    return diagrams.graph_with_phases(definition, phases, status.get("phase"))


def _journal_state(uid: str) -> RunState | None:
    async def load() -> RunState | None:
        config = EtcdConfig.from_env()
        try:
            etcd = await connect(config, request_timeout=3)
        except Exception:
            return None
        try:
            records, _ = await Journal(etcd, config.prefix).load(uid)
            return fold(records) if records else None
        except Exception:
            return None  # unreachable: status is the fallback
        finally:
            await etcd.close()

    return asyncio.run(load())
