"""Commands that read: `kurable crds`, `kurable history` (through the endpoint), `kurable watch`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from kurable.api import crd
from kurable.api.v1alpha1 import WORKFLOW
from kurable.engine.journal import TERMINAL_PHASES, Record
from kurable.engine.messages import counted

from . import _entities
from ._client import connect
from ._errors import UserError
from ._kube import get_object, split_ref
from ._output import DATA_FORMATS, print_data
from ._table import table

WORKFLOW_KINDS = ("workflow", "workflows", "kwf")


def crds(args: argparse.Namespace) -> int:
    out = Path(args.output)
    if not args.check:
        for path in crd.write_all(out):
            print(path)
        return 0
    stale = [
        name
        for name, text in crd.render_all().items()
        if not (out / name).exists() or (out / name).read_text() != text
    ]
    if stale:
        print("out of date (run `make crds`): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


def history(args: argparse.Namespace) -> int:
    if _entities.is_entity_ref(args.ref):
        return _entities.history(args)
    _, name = split_ref(args.ref, WORKFLOW_KINDS)
    with connect(args) as client:
        raw = client.run_history(args.namespace, name)
    if args.output in DATA_FORMATS:
        print_data(args, raw)
        return 0
    records = [Record.from_json(r) for r in raw]
    rows = [
        (str(r.seq), r.at, r.type, r.step or "", str(r.attempt or ""), _detail(r)) for r in records
    ]
    for line in table(("SEQ", "AT", "RECORD", "STEP", "TRY", "DETAIL"), rows, right=(0, 4)):
        print(line)
    return 0


def watch(args: argparse.Namespace) -> int:
    """Print each step's phase changes until the run is finished."""
    deadline = time.monotonic() + args.timeout
    seen: dict[str, tuple[Any, ...]] = {}
    phase = None
    while time.monotonic() < deadline:
        status = _get_workflow(args.ref, args.namespace).get("status") or {}
        if status.get("phase") != phase and status.get("phase") not in TERMINAL_PHASES:
            phase = status.get("phase")
            print(f"{args.ref}: {phase}", flush=True)
        for step in status.get("steps") or []:
            key = (step.get("phase"), step.get("attempts"))
            if seen.get(step["name"]) != key:
                seen[step["name"]] = key
                extra = ""
                if step.get("wakeAt") and step.get("phase") == "Waiting":
                    extra = f"  (until {step['wakeAt']})"
                elif step.get("output") is not None:
                    extra = f"  output={json.dumps(step['output'])}"
                elif step.get("message"):
                    extra = f"  {step['message']}"
                print(f"  step {step['name']:<16} {step.get('phase'):<10}{extra}", flush=True)
        if status.get("phase") in TERMINAL_PHASES:
            phase = status["phase"]
            print(f"{args.ref}: {phase}", flush=True)
            if status.get("output") is not None:
                print(f"output: {json.dumps(status['output'])}")
            if status.get("message"):
                print(f"message: {status['message']}")
            return 0 if phase == "Succeeded" else 1
        time.sleep(0.3)
    raise UserError(f"{args.ref} did not finish within {args.timeout:.0f}s")


def _detail(record: Record) -> str:
    data = record.data.to_wire()
    if record.type == "WorkflowStarted":
        steps = data.get("definition", {}).get("steps") or []
        return f"pinned {counted(len(steps), 'step')}; input={json.dumps(data.get('input'))}"
    data.pop("next", None)
    text = json.dumps(data, separators=(",", ":")) if data else ""
    return text if len(text) < 120 else text[:117] + "..."


def _get_workflow(ref: str, namespace: str | None) -> dict[str, Any]:
    return get_object(ref, namespace, WORKFLOW, WORKFLOW_KINDS)[2]
