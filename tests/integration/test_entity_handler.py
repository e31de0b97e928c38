"""An EntityType command decided by an HTTP handler, with the same exactly-once rules."""

from __future__ import annotations

from collections import Counter
from typing import Any

from aiohttp import web

from kurable.testing import ControlPlane, OperatorProcess

from .conftest import Door, apply, eventually, get, wait_phase, workflow
from .test_engine import Service
from .test_entities import cli


class Ledger(Service):
    """The handler: `add` appends an Added event of `n`; a negative `n` is refused."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: Counter[str] = Counter()

    async def _handle(self, request: web.Request) -> web.Response:
        self.asked[request.headers.get("Idempotency-Key", "")] += 1
        body: dict[str, Any] = await request.json()
        n = body["input"]["n"]
        if n < 0:
            return web.json_response({"message": "negative amounts are not allowed"}, status=400)
        total = body["state"]["total"] + n
        return web.json_response(
            {"events": [{"type": "Added", "data": {"n": n}}], "reply": {"total": total}}
        )


def ledger_type(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "EntityType",
        "metadata": {"name": "ledger"},
        "spec": {
            "stateSchema": {
                "type": "object",
                "properties": {"total": {"type": "integer"}},
                "required": ["total"],
            },
            "commands": {
                "add": {
                    "inputSchema": {
                        "type": "object",
                        "properties": {"n": {"type": "integer"}},
                        "required": ["n"],
                    },
                    "handler": {"http": {"url": url}},
                }
            },
            "events": {"Added": {"set": {"total": "${ state.total + event.n }"}}},
        },
    }


def test_http_handler_decides_commands_exactly_once(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    with Ledger() as ledger:
        apply(control_plane, namespace, ledger_type(ledger.url("/ledger")))
        apply(control_plane, namespace, {
            "apiVersion": "kurable.dev/v1alpha1", "kind": "Entity",
            "metadata": {"name": "book"}, "spec": {"type": "ledger", "initialState": {"total": 0}},
        })  # fmt: skip
        eventually(
            lambda: get(control_plane, namespace, "entitytype/ledger"),
            lambda t: (t.get("status") or {}).get("phase") == "Valid",
            30,
            "the ledger type to be Valid",
        )
        eventually(
            lambda: get(control_plane, namespace, "entity/book"),
            lambda e: (e.get("status") or {}).get("phase") == "Ready",
            30,
            "the book to be Ready",
        )
        args = ("command", "entity/book", "add", "-n", namespace, "--input", '{"n": 5}')
        first = cli(door, *args, "--id", "add-5")
        again = cli(door, *args, "--id", "add-5")
        assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
        assert first.stdout.strip() == again.stdout.strip() == '{"total": 5}'
        assert ledger.asked["add-5"] == 1  # the duplicate was answered from the dedup record

        refused = cli(door, "command", "entity/book", "add", "-n", namespace,
                      "--input", '{"n": -1}', "--id", "neg")  # fmt: skip
        assert refused.returncode == 1
        assert "HandlerError" in refused.stderr and "negative amounts" in refused.stderr

        apply(control_plane, namespace, workflow(
            "add-more",
            steps=[{"name": "add", "entity": {"name": "book", "command": "add",
                                              "input": {"n": 7}}}],
            output="${ steps.add.output.total }",
        ))  # fmt: skip
        wf = wait_phase(control_plane, namespace, "add-more", ("Succeeded",))
        assert wf["status"]["output"] == 12
        assert ledger.asked[f"{wf['metadata']['uid']}/add"] == 1
    book = eventually(
        lambda: get(control_plane, namespace, "entity/book"),
        lambda e: (e.get("status") or {}).get("version") == 2,
        30,
        "the book's status to show two events",
    )
    assert book["status"]["state"] == {"total": 12}
