"""The CLI for runs, through the endpoint: `kurable start TEMPLATE` and
`kurable signal workflow/NAME SIGNAL`."""

from __future__ import annotations

import argparse
import json
import sys

from ._client import connect
from ._entities import parse_json
from ._errors import UserError
from ._inspect import WORKFLOW_KINDS
from ._kube import split_ref

FAILED_EXIT = 1
"""`start --wait`: the run finished, but not Succeeded (Failed, Cancelled, Invalid)."""
NOT_FINISHED_EXIT = 4
"""`start --wait`: the run had not finished when the wait ran out (it goes on)."""
CONFLICT_EXIT = 3
"""The Idempotency-Key (--id) was used before for another request (nothing was done)."""
FINISHED = ("Succeeded", "Failed", "Cancelled", "Invalid")


def start(args: argparse.Namespace) -> int:
    """Start a run of a WorkflowTemplate; print the run as JSON. With --wait, print it once
    it has finished (exit 0 Succeeded, 1 otherwise) or the wait ran out (exit 4)."""
    from kurable.client import Conflict

    payload = parse_json(args.input, "--input")
    labels = dict(_label(text) for text in args.label or [])
    with connect(args) as client:
        try:
            run = client.start(
                args.namespace,
                args.template,
                payload,
                name=args.name,
                labels=labels or None,
                idempotency_key=args.id,
                wait=args.timeout if args.wait else None,
            )
        except Conflict as e:
            print(f"conflict: {e.message}", file=sys.stderr)
            return CONFLICT_EXIT
    print(json.dumps(run, indent=2))
    if not args.wait:
        return 0
    phase = run.get("phase")
    if phase not in FINISHED:
        print(
            f"workflow/{run['name']} has not finished within {args.timeout:g}s "
            f"(phase {phase}); `kurable watch workflow/{run['name']}` follows it",
            file=sys.stderr,
        )
        return NOT_FINISHED_EXIT
    return 0 if phase == "Succeeded" else FAILED_EXIT


def signal(args: argparse.Namespace) -> int:
    """Send a signal with a JSON payload to a run; print `{signal, duplicate}`."""
    from kurable.client import Conflict

    _, name = split_ref(args.ref, WORKFLOW_KINDS)
    payload = parse_json(args.payload, "--payload")
    with connect(args) as client:
        try:
            sent = client.signal(args.namespace, name, args.signal, payload, args.id)
        except Conflict as e:
            print(f"conflict: {e.message}", file=sys.stderr)
            return CONFLICT_EXIT
    print(json.dumps(sent))
    return 0


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise UserError(f"--label {text!r}: expected KEY=VALUE")
    return key, value
