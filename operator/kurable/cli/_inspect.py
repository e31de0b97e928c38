"""Commands that read: `kurable crds`, `kurable history`, `kurable watch`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kurable.api import crd
from kurable.api.v1alpha1 import GROUP, VERSION, WORKFLOW
from kurable.engine.journal import TERMINAL_PHASES, Record
from kurable.store.journal import EtcdConfig, Journal, connect

from . import _entities
from ._errors import UserError
from ._table import table


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
    workflow = _get_workflow(args.ref, args.namespace)
    records = asyncio.run(_load_journal(workflow["metadata"]["uid"]))
    if args.output == "json":
        print(json.dumps([r.to_json() for r in records], indent=2))
        return 0
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
        return f"pinned {len(steps)} steps; input={json.dumps(data.get('input'))}"
    data.pop("next", None)
    text = json.dumps(data, separators=(",", ":")) if data else ""
    return text if len(text) < 120 else text[:117] + "..."


def _get_workflow(ref: str, namespace: str | None) -> dict[str, Any]:
    kind, _, name = ref.partition("/")
    if kind.lower() not in ("workflow", "workflows", "wf") or not name:
        raise UserError(f"expected workflow/NAME, got {ref!r}")
    from kubernetes import client, config

    # The client reads $KUBECONFIG when it is imported; read it again now.
    path = os.environ.get("KUBECONFIG")
    try:
        config.load_kube_config(config_file=path)  # type: ignore[no-untyped-call]
        _, context = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
            config_file=path
        )
    except config.ConfigException as e:
        raise UserError(f"no usable kubeconfig: {e}") from None
    namespace = namespace or context.get("context", {}).get("namespace") or "default"
    api = client.CustomObjectsApi()
    try:
        obj: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, namespace, WORKFLOW.plural, name
        )
    except client.ApiException as e:
        if e.status == 404:
            raise UserError(f"workflow {name!r} not found in namespace {namespace!r}") from None
        raise
    return obj


async def _load_journal(uid: str) -> list[Record]:
    config = EtcdConfig.from_env()
    try:
        etcd = await connect(config, request_timeout=5)
    except Exception as e:
        raise UserError(
            f"cannot reach etcd at {config.endpoints} (set KURABLE_ETCD_ENDPOINTS): {e}"
        ) from None
    try:
        records, _ = await Journal(etcd, config.prefix).load(uid)
        return records
    finally:
        await etcd.close()
