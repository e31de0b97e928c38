"""Every EntityType under examples/ works: each declared command, sent with a valid input
to an Entity of that type, is accepted."""

from __future__ import annotations

from typing import Any

import yaml

from kurable.testing import ControlPlane, OperatorProcess
from tests.conftest import ROOT

from .conftest import Door, apply, eventually, get

INITIAL_STATES: dict[str, dict[str, Any]] = {"counter": {"value": 0, "limit": 10}}
"""An initial state for each example EntityType that no example Entity uses."""

COMMANDS: list[tuple[str, str, Any, str | None]] = [
    ("wallet", "withdraw", {"amount": 1}, None),
    ("wallet", "deposit", {"amount": 1}, None),
    ("counter", "increment", {"by": 2}, None),
    ("product", "reserve", {"qty": 1}, None),
    ("product", "restock", {"qty": 1}, None),
    ("account", "charge", {"amount": 1}, None),
    ("order", "place", {"sku": "widget", "qty": 1, "total": 5}, "order-1"),
    ("order", "confirm", {}, "order-1"),
    ("order", "place", {"sku": "widget", "qty": 2, "total": 10}, "order-2"),
    ("order", "cancel", {"reason": "changed my mind"}, "order-2"),
    ("stock", "reserve", {"order": "order-1", "qty": 1, "total": 5}, None),
    ("stock", "release", {"order": "order-1", "qty": 1}, None),
    ("payment", "charge", {"order": "order-1", "amount": 5}, None),
    (
        "payment",
        "decline",
        {"order": "order-2", "amount": 10, "sku": "widget", "qty": 2, "reason": "card expired"},
        None,
    ),
]
"""A valid input for each command of each example EntityType, in an order whose guards pass:
(type, command, input, the Entity to send it to, or None for the first of the type)."""


def example_manifests() -> list[dict[str, Any]]:
    manifests = []
    for path in sorted(ROOT.glob("examples/**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("EntityType", "Entity"):
                manifests.append(doc)
    return manifests


def test_every_command_of_every_example_entity_type_is_accepted(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str, door: Door
) -> None:
    manifests = example_manifests()
    types = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "EntityType"}
    assert {"wallet", "counter"} <= types.keys()
    declared = {(t, c) for t, m in types.items() for c in m["spec"]["commands"]}
    assert declared == {(t, c) for t, c, _, _ in COMMANDS}, (
        "give each example command a valid input in COMMANDS"
    )
    entities: dict[str, str] = {}
    for m in manifests:
        if m["kind"] == "Entity":
            entities.setdefault(m["spec"]["type"], m["metadata"]["name"])
    for type_name in types.keys() - entities.keys():
        name = f"{type_name}-example"
        manifests.append(
            {
                "apiVersion": "kurable.dev/v1alpha1",
                "kind": "Entity",
                "metadata": {"name": name},
                "spec": {"type": type_name, "initialState": INITIAL_STATES[type_name]},
            }
        )
        entities[type_name] = name
    for manifest in manifests:
        apply(control_plane, namespace, manifest)
    for type_name in types:
        eventually(
            lambda ref=f"entitytype/{type_name}": get(control_plane, namespace, ref),
            lambda t: (t.get("status") or {}).get("phase") == "Valid",
            30,
            f"EntityType {type_name} to be Valid",
        )
    for name in entities.values():
        eventually(
            lambda ref=f"entity/{name}": get(control_plane, namespace, ref),
            lambda e: (e.get("status") or {}).get("phase") == "Ready",
            30,
            f"Entity {name} to be Ready",
        )
    with door.client() as kurable:
        for type_name, command, input, entity in COMMANDS:
            entity = entity or entities[type_name]
            before = kurable.get_state(namespace, entity).version
            result = kurable.execute(namespace, entity, command, input)
            assert result.version > before, f"{type_name}.{command} on {entity} emitted nothing"
            assert not result.duplicate
