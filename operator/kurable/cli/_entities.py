"""The CLI for entities: `kurable command entity/NAME CMD`, `kurable history entity/NAME`,
both through the endpoint."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ._client import connect
from ._errors import UserError
from ._output import DATA_FORMATS, print_data
from ._table import table

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
    from kurable.client import CommandConflict, CommandRejected, NotFound, Unavailable

    name = _entity_name(args.ref)
    payload = parse_json(args.input, "--input")
    with connect(args) as client:
        try:
            reply = client.send_command(args.namespace, name, args.entity_command, payload, args.id)
        except CommandRejected as e:
            print(f"rejected ({e.reason}): {e.message}", file=sys.stderr)
            return 1
        except CommandConflict as e:
            print(f"conflict: {e.message}", file=sys.stderr)
            return CONFLICT_EXIT
        except NotFound as e:
            raise UserError(f"{e} (nothing was applied)") from None
        except Unavailable as e:
            raise UserError(f"{e} ({unapplied_hint(args.id)})") from None
    print(json.dumps(reply))
    return 0


def parse_json(text: str | None, flag: str) -> Any:
    """The JSON of a flag's value (None when not given); UserError when it is not JSON."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{flag} is not JSON: {e}") from None


def unapplied_hint(command_id: str | None) -> str:
    """What to do after a command that was not applied (busy entity, handler down): resend
    it; with the same --id when one was given, so that a resend is never applied twice."""
    if command_id is None:
        return "nothing was applied; send the command again"
    return f"nothing was applied; send it again with the same --id {command_id}"


def history(args: argparse.Namespace) -> int:
    """Print an entity's event log."""
    name = _entity_name(args.ref)
    with connect(args) as client:
        events = client.history(args.namespace, name)
    if args.output in DATA_FORMATS:
        print_data(args, events)
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
