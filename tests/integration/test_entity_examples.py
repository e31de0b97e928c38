"""Every EntityType under examples/ works: each declared command, sent with a valid input
to an Entity of that type, is accepted."""

from __future__ import annotations

from typing import Any

import yaml

from kurable.client import Client
from kurable.store.journal import EtcdConfig
from kurable.testing import ControlPlane, OperatorProcess
from tests.conftest import ROOT

from .conftest import apply, eventually, get

PREFIX = "/kurable/"

INITIAL_STATES: dict[str, dict[str, Any]] = {"counter": {"value": 0, "limit": 10}}
"""An initial state for each example EntityType that no example Entity uses."""

INPUTS: dict[tuple[str, str], Any] = {
    ("wallet", "withdraw"): {"amount": 1},
    ("wallet", "deposit"): {"amount": 1},
    ("counter", "increment"): {"by": 2},
}
"""A valid input for each command of each example EntityType (type, command)."""


def example_manifests() -> list[dict[str, Any]]:
    manifests = []
    for path in sorted(ROOT.glob("examples/**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in ("EntityType", "Entity"):
                manifests.append(doc)
    return manifests


def test_every_command_of_every_example_entity_type_is_accepted(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    manifests = example_manifests()
    types = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "EntityType"}
    assert {"wallet", "counter"} <= types.keys()
    declared = {(t, c) for t, m in types.items() for c in m["spec"]["commands"]}
    assert declared == INPUTS.keys(), "give each example command a valid input in INPUTS"
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
    config = EtcdConfig(control_plane.etcd_endpoint, PREFIX)
    with Client.from_kubeconfig(str(control_plane.kubeconfig), etcd=config) as kurable:
        for (type_name, command), input in sorted(INPUTS.items()):
            result = kurable.execute(namespace, entities[type_name], command, input)
            assert result.events, f"{type_name}.{command} emitted nothing"
            assert not result.duplicate
