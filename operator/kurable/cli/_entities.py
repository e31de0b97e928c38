"""The CLI for entities: `kurable command entity/NAME CMD`, `kurable history entity/NAME`."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from ._errors import UserError
from ._table import table

if TYPE_CHECKING:
    from kurable.client import Client


ENTITY_KINDS = ("entity", "entities", "ent")
CONFLICT_EXIT = 3
"""Exit status when --id was used before for another command or input (nothing applied)."""


def is_entity_ref(ref: str) -> bool:
    """True for `entity/NAME` (and the kind's plural and short name)."""
    kind, _, name = ref.partition("/")
    return kind.lower() in ENTITY_KINDS and bool(name)


def command(args: argparse.Namespace) -> int:
    """Send a command; print the reply as JSON (exit 0), or on stderr the rejection (exit 1)
    or the conflict of an --id reused for another command or input (exit 3)."""
    from kurable.client import (
        CommandConflict,
        CommandRejected,
        EntityBusy,
        EntityNotFound,
        HandlerUnavailable,
    )

    name = _entity_name(args.ref)
    try:
        payload: Any = json.loads(args.input) if args.input is not None else None
    except json.JSONDecodeError as e:
        raise UserError(f"--input is not JSON: {e}") from None
    with _connect() as client:
        try:
            reply = client.send_command(args.namespace, name, args.entity_command, payload, args.id)
        except CommandRejected as e:
            print(f"rejected ({e.reason}): {e.message}", file=sys.stderr)
            return 1
        except CommandConflict as e:
            print(f"conflict: {e.message}", file=sys.stderr)
            return CONFLICT_EXIT
        except EntityNotFound as e:
            raise UserError(f"{e} (nothing was applied)") from None
        except (EntityBusy, HandlerUnavailable) as e:
            raise UserError(f"{e} ({unapplied_hint(args.id)})") from None
    print(json.dumps(reply))
    return 0


def unapplied_hint(command_id: str | None) -> str:
    """What to do after a command that was not applied (busy entity, handler down): resend
    it; with the same --id when one was given, so that a resend is never applied twice."""
    if command_id is None:
        return "nothing was applied; send the command again"
    return f"nothing was applied; send it again with the same --id {command_id}"


def history(args: argparse.Namespace) -> int:
    """Print an entity's event log."""
    from kurable.client import EntityNotFound

    name = _entity_name(args.ref)
    with _connect() as client:
        try:
            events = client.history(args.namespace, name)
        except EntityNotFound as e:
            raise UserError(str(e)) from None
    if args.output == "json":
        print(json.dumps(events, indent=2))
        return 0
    rows = []
    for event in events:
        data = json.dumps(event.get("data"), separators=(",", ":"))
        data = data if len(data) < 100 else data[:97] + "..."
        rows.append(
            (str(event["version"]), event["at"], event["type"], event.get("commandId", ""), data)
        )
    for line in table(("VERSION", "AT", "EVENT", "COMMAND ID", "DATA"), rows, right=(0,)):
        print(line)
    return 0


def _entity_name(ref: str) -> str:
    if not is_entity_ref(ref):
        raise UserError(f"expected entity/NAME, got {ref!r}")
    return ref.partition("/")[2]


def _connect() -> Client:
    # Imported late: the client pulls in the asyncio Kubernetes and etcd libraries.
    from kurable.client import Client

    try:
        return Client.from_kubeconfig()
    except Exception as e:
        raise UserError(
            f"cannot connect (check $KUBECONFIG and $KURABLE_ETCD_ENDPOINTS): {e}"
        ) from None
