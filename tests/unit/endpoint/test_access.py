"""Each route's SubjectAccessReview attributes: the issue's table, row by row."""

from __future__ import annotations

from kurable.endpoint import _access as access


def test_the_access_table() -> None:
    rows = {
        "start": access.start_run("shop").resource_attributes(),
        "read": access.read_run("shop", "r1").resource_attributes(),
        "list": access.list_runs("shop").resource_attributes(),
        "signal": access.signal_run("shop", "r1").resource_attributes(),
        "control": access.control_run("shop", "r1").resource_attributes(),
        "command": access.command_entity("shop", "alice").resource_attributes(),
        "entity": access.read_entity("shop", "alice").resource_attributes(),
        "trigger": access.trigger_schedule("shop", "nightly").resource_attributes(),
    }
    group = {"group": "kurable.dev", "namespace": "shop"}
    assert rows == {
        "start": {**group, "verb": "create", "resource": "workflows"},
        "read": {**group, "verb": "get", "resource": "workflows", "name": "r1"},
        "list": {**group, "verb": "list", "resource": "workflows"},
        "signal": {
            **group,
            "verb": "create",
            "resource": "workflows",
            "subresource": "signal",
            "name": "r1",
        },
        "control": {**group, "verb": "patch", "resource": "workflows", "name": "r1"},
        "command": {
            **group,
            "verb": "create",
            "resource": "entities",
            "subresource": "command",
            "name": "alice",
        },
        "entity": {**group, "verb": "get", "resource": "entities", "name": "alice"},
        "trigger": {
            **group,
            "verb": "create",
            "resource": "schedules",
            "subresource": "trigger",
            "name": "nightly",
        },
    }


def test_a_denial_names_verb_resource_name_and_namespace() -> None:
    text = access.command_entity("shop", "bob").describe()
    assert text == 'create entities/command.kurable.dev "bob" in namespace shop'
