"""The OpenAPI v3 subset of entity schemas: what it checks and how it says what is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from kurable.engine.schema import check_schema, validate

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
