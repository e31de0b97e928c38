"""The one schema dialect (structural OpenAPI v3): what it checks and how it says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kurable.api.v1alpha1 import EntityTypeSpec
from kurable.engine.entities import CommandRejected, checked_input, definition_problems
from kurable.engine.schema import check_schema, validate
from tests.conftest import ROOT

ITEM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 5, "pattern": "^[a-z]+$"},
        "size": {"type": "string", "enum": ["S", "M"]},
        "price": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 10},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "note": {"type": "string", "nullable": True},
        "extra": {"type": "object", "additionalProperties": {"type": "integer"}},
        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
    "required": ["name"],
}


def test_a_fitting_value_has_no_problems() -> None:
    value = {
        "name": "abc",
        "size": "M",
        "price": 9.5,
        "tags": ["a"],
        "note": None,
        "extra": {"k": 1},
        "free": {"anything": [1, {"x": 2}]},
    }
    assert validate(ITEM, value, "item") == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ({}, "item.name: required"),
        ({"name": ""}, "item.name: must have at least 1 characters, got 0"),
        ({"name": "abcdef"}, "item.name: must have at most 5 characters, got 6"),
        ({"name": "AB"}, "item.name: must match '^[a-z]+$', got \"AB\""),
        ({"name": "a", "size": "L"}, 'item.size: must be one of "S", "M", got "L"'),
        ({"name": "a", "price": 0}, "item.price: must be > 0, got 0"),
        ({"name": "a", "price": 11}, "item.price: must be <= 10, got 11"),
        ({"name": "a", "tags": ["x", 1]}, "item.tags[1]: must be a string, got 1"),
        ({"name": "a", "tags": ["x", "y", "z"]}, "item.tags: must have at most 2 items, got 3"),
        ({"name": "a", "size": None}, "item.size: must be a string, got null"),
        ({"name": "a", "extra": {"k": "v"}}, 'item.extra.k: must be an integer, got "v"'),
        ({"name": "a", "colour": "red"}, "item.colour: unknown field (known: extra, free,"),
        ("abc", 'item: must be an object, got "abc"'),
    ],
)
def test_each_rule_reports_the_path_and_the_value(value: Any, problem: str) -> None:
    problems = validate(ITEM, value, "item")
    assert any(p.startswith(problem) for p in problems), problems


def test_integers_are_not_booleans_and_numbers_accept_both_kinds() -> None:
    assert validate({"type": "integer"}, True, "v") == ["v: must be an integer, got true"]
    assert validate({"type": "integer"}, 1.5, "v") == ["v: must be an integer, got 1.5"]
    assert validate({"type": "number"}, 1, "v") == []
    assert validate({"type": "number"}, 1.5, "v") == []


def test_a_schema_without_properties_accepts_any_fields() -> None:
    assert validate({"type": "object"}, {"a": 1}, "v") == []


def test_problems_are_capped_so_messages_stay_readable() -> None:
    schema = {"type": "object", "properties": {}, "additionalProperties": False}
    assert len(validate(schema, {str(i): i for i in range(20)}, "v")) == 5


def test_check_schema_refuses_unknown_keywords_and_types_and_accepts_documentation() -> None:
    assert check_schema({"type": "object", "description": "d", "format": "x"}, "s") == []
    assert check_schema({"type": "int"}, "s") == [
        's.type: must be one of object, array, string, integer, number, boolean, got "int"'
    ]
    assert check_schema({"properties": {"a": {"anyOf": []}}}, "s") == [
        "s.properties.a: unsupported schema keyword(s) anyOf"
    ]
    assert check_schema([], "s") == ["s: a schema must be an object, got []"]
    assert check_schema({"pattern": "("}, "s")[0].startswith("s.pattern: not a regular expression")
    assert check_schema({"minLength": -1, "minimum": "0"}, "s") == [
        "s.minimum: must be a number",
        "s.minLength: must be a non-negative integer",
    ]


# One dialect on both doors: a template's inputSchema (checked when a run starts and when
# the template is applied) and an entity command's inputSchema (checked before deciding).
# Each case wraps its schema as the field `v` of an object schema, its value as {"v": value}.
# Expected: None when the value fits, else the problem both doors report, below the root.
ONE_DIALECT: list[tuple[str, dict[str, Any], Any, str | None]] = [
    ("nullable accepts null", {"type": "string", "nullable": True}, None, None),
    (
        "nullable still checks a value",
        {"type": "string", "nullable": True},
        1,
        ".v: must be a string, got 1",
    ),
    ("null needs nullable", {"type": "string"}, None, ".v: must be a string, got null"),
    (
        "nullable needs no null in enum",
        {"type": "string", "nullable": True, "enum": ["a"]},
        None,
        None,
    ),
    (
        "enum without null",
        {"type": "string", "enum": ["a"]},
        None,
        ".v: must be a string, got null",
    ),
    (
        "unknown field refused",
        {"type": "object", "properties": {"a": {"type": "integer"}}},
        {"a": 1, "b": 2},
        ".v.b: unknown field (known: a)",
    ),
    (
        "preserve-unknown-fields keeps them",
        {
            "type": "object",
            "properties": {"a": {"type": "integer"}},
            "x-kubernetes-preserve-unknown-fields": True,
        },
        {"a": 1, "b": 2},
        None,
    ),
    ("an object without properties takes any field", {"type": "object"}, {"b": [1]}, None),
    (
        "additionalProperties checks every value",
        {"type": "object", "additionalProperties": {"type": "integer"}},
        {"a": 1, "b": "x"},
        '.v.b: must be an integer, got "x"',
    ),
    ("date-time", {"type": "string", "format": "date-time"}, "2024-05-01T10:00:00Z", None),
    (
        "not a date-time",
        {"type": "string", "format": "date-time"},
        "May 1st",
        '.v: must be a valid date-time, got "May 1st"',
    ),
    (
        "not a date",
        {"type": "string", "format": "date"},
        "2024-13-01",
        '.v: must be a valid date, got "2024-13-01"',
    ),
    (
        "not a uuid",
        {"type": "string", "format": "uuid"},
        "x-1",
        '.v: must be a valid uuid, got "x-1"',
    ),
    (
        "not an int32",
        {"type": "integer", "format": "int32"},
        2**31,
        ".v: must be a valid int32, got 2147483648",
    ),
    (
        "an unchecked format documents",
        {"type": "string", "format": "hostname"},
        "not a host!",
        None,
    ),
    (
        "nested arrays",
        {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1}},
        [[1], [2, 3], []],
        ".v[2]: must have at least 1 items, got 0",
    ),
    (
        "objects in arrays",
        {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "string"}},
                "required": ["id"],
            },
        },
        [{"id": "a"}, {}, {"id": "c"}],
        ".v[1].id: required",
    ),
    (
        "unknown field deep down",
        {
            "type": "array",
            "items": {"type": "object", "properties": {"id": {"type": "string"}}},
        },
        [{"id": "a", "idd": "b"}],
        ".v[0].idd: unknown field (known: id)",
    ),
    ("uniqueItems", {"type": "array", "uniqueItems": True}, [1, 2, 1], ".v: must not repeat items"),
    (
        "exclusiveMinimum",
        {"type": "number", "minimum": 0, "exclusiveMinimum": True},
        0,
        ".v: must be > 0, got 0",
    ),
    ("pattern", {"type": "string", "pattern": "^[a-z]+$"}, "abc", None),
    ("a boolean is no integer", {"type": "integer"}, True, ".v: must be an integer, got true"),
]


def _wrapped(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {"v": schema}, "required": ["v"]}


def _template_door(schema: dict[str, Any], value: Any) -> list[str]:
    """What a run of a template with this inputSchema reports for this input."""
    from kurable.executor.runs import _check_input, _Invalid
    from kurable.handlers.workflowtemplate import verdict

    assert verdict({"inputSchema": schema, "steps": [{"name": "a", "set": {"x": "1"}}]}) is None
    try:
        _check_input(schema, value)
    except _Invalid as e:
        text = str(e).removeprefix("input does not match the template's inputSchema: ")
        return [p.removeprefix("spec.input") for p in text.split("; ")]
    return []


def _entity_door(schema: dict[str, Any], value: Any) -> list[str]:
    """What an entity command with this inputSchema reports for this input."""
    spec = yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())["spec"]
    spec["commands"]["deposit"]["inputSchema"] = schema
    # The command must not read `input.amount`, which this schema may not list.
    spec["commands"]["deposit"]["emit"] = [{"type": "Deposited", "data": {"amount": 1}}]
    typed = EntityTypeSpec.model_validate(spec)
    assert definition_problems(typed) == []
    try:
        checked_input(typed, "deposit", value)
    except CommandRejected as e:
        assert e.reason == "InvalidInput"
        return [p.removeprefix("input") for p in e.message.split("; ")]
    return []


@pytest.mark.parametrize(
    ("schema", "value", "problem"),
    [pytest.param(s, v, p, id=name) for name, s, v, p in ONE_DIALECT],
)
def test_a_template_and_an_entity_command_judge_an_input_alike(
    schema: dict[str, Any], value: Any, problem: str | None
) -> None:
    wrapped, given = _wrapped(schema), {"v": value}
    expected = [] if problem is None else [problem]
    assert _template_door(wrapped, given) == expected
    assert _entity_door(wrapped, given) == expected


BAD_SCHEMAS: list[tuple[dict[str, Any], str]] = [
    ({"type": "int"}, ".type: must be one of object, array, string, integer, number, boolean"),
    ({"type": "object", "oneOf": []}, ": unsupported schema keyword(s) oneOf"),
    ({"type": "object", "$ref": "#/x"}, ": unsupported schema keyword(s) $ref"),
    ({"type": "string", "nullable": "yes"}, ".nullable: must be true or false"),
    (
        {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {}},
        ": properties and additionalProperties cannot be used together",
    ),
    ({"type": "object", "additionalProperties": False}, ".additionalProperties: must be a schema"),
    (
        {"type": "array", "items": [{"type": "string"}]},
        '.items: a schema must be an object, got [{"type": "string"}]',
    ),
    ({"type": "string", "pattern": "("}, '.pattern: not a regular expression: "("'),
    ({"type": "integer", "multipleOf": 0}, ".multipleOf: must be a number > 0"),
    ({"type": "object", "required": "a"}, ".required: must be a list of property names"),
    ({"type": "integer", "minimum": 1, "default": 0}, ".default: must be >= 1, got 0"),
    (
        {"type": "object", "properties": {"a": {"type": "string", "default": 3}}},
        ".properties.a.default: must be a string, got 3",
    ),
]


@pytest.mark.parametrize(("schema", "problem"), BAD_SCHEMAS)
def test_a_bad_schema_is_refused_alike_by_a_template_and_an_entity_type(
    schema: dict[str, Any], problem: str
) -> None:
    from kurable.handlers.workflowtemplate import verdict

    template = verdict({"inputSchema": schema, "steps": [{"name": "a", "set": {"x": "1"}}]})
    assert template is not None and template.startswith("spec.inputSchema" + problem), template
    spec = yaml.safe_load((ROOT / "examples/transfer/00-wallet.yaml").read_text())["spec"]
    spec["commands"]["deposit"]["inputSchema"] = schema
    entity = definition_problems(EntityTypeSpec.model_validate(spec))
    assert entity and entity[0].startswith("spec.commands.deposit.inputSchema" + problem), entity
