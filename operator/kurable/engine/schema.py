"""A small validator for the OpenAPI v3 subset that entity schemas use.

Kubernetes users write structural OpenAPI v3 schemas every day (CRDs); entity
`stateSchema` and `inputSchema` use the same words: `type`, `properties`,
`required`, `additionalProperties`, `items`, `enum`, `nullable`, `minimum`,
`maximum`, `exclusiveMinimum`, `exclusiveMaximum` (booleans, as in OpenAPI 3.0),
`minLength`, `maxLength`, `pattern`, `minItems`, `maxItems`,
`x-kubernetes-preserve-unknown-fields`. Words that only document (`description`,
`title`, `format`, `default`, `example`) are accepted and ignored. Any other word is
refused by `check_schema`, so that a schema never silently checks less than it says.

One departure from JSON Schema, on purpose: an object whose schema lists
`properties` refuses fields it does not list (unless `additionalProperties` or
`x-kubernetes-preserve-unknown-fields` says otherwise). The API server would prune
such a field from a structural schema; for entity state, a dropped field would be a
lost write, so it is refused with the list of known fields instead.

Problems are reported as `<path>: <what is wrong>`, e.g. `input.amount: must be >= 1, got 0`.
"""

from __future__ import annotations

import json
import re
from typing import Any

TYPES = ("object", "array", "string", "integer", "number", "boolean")
_CHECKING = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "nullable",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "x-kubernetes-preserve-unknown-fields",
}
_DOCUMENTING = {"description", "title", "format", "default", "example"}
MAX_PROBLEMS = 5
"""Reported problems per validation; the first ones are what a user fixes first."""


def check_schema(schema: Any, where: str) -> list[str]:
    """Problems with a schema itself (unknown words, wrong shapes), located at `where`."""
    if not isinstance(schema, dict):
        return [f"{where}: a schema must be an object, got {_show(schema)}"]
    problems: list[str] = []
    unknown = sorted(set(schema) - _CHECKING - _DOCUMENTING)
    if unknown:
        problems.append(f"{where}: unsupported schema keyword(s) {', '.join(unknown)}")
    kind = schema.get("type")
    if kind is not None and kind not in TYPES:
        problems.append(f"{where}.type: must be one of {', '.join(TYPES)}, got {_show(kind)}")
    properties = schema.get("properties", {})
    if not isinstance(properties, dict):
        problems.append(f"{where}.properties: must be an object")
    else:
        for name, sub in properties.items():
            problems += check_schema(sub, f"{where}.properties.{name}")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        problems.append(f"{where}.required: must be a list of property names")
    additional = schema.get("additionalProperties")
    if additional is not None and not isinstance(additional, bool):
        problems += check_schema(additional, f"{where}.additionalProperties")
    if "items" in schema:
        problems += check_schema(schema["items"], f"{where}.items")
    if "enum" in schema and not isinstance(schema["enum"], list):
        problems.append(f"{where}.enum: must be a list")
    for word in ("minimum", "maximum"):
        if word in schema and not _is_number(schema[word]):
            problems.append(f"{where}.{word}: must be a number")
    for word in ("minLength", "maxLength", "minItems", "maxItems"):
        if word in schema and not (isinstance(schema[word], int) and schema[word] >= 0):
            problems.append(f"{where}.{word}: must be a non-negative integer")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as e:
            problems.append(f"{where}.pattern: not a regular expression ({e})")
    return problems


def validate(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Problems of `value` against `schema` (at most MAX_PROBLEMS), each naming its path."""
    problems: list[str] = []
    _validate(schema, value, path, problems)
    return problems[:MAX_PROBLEMS]


def _validate(schema: dict[str, Any], value: Any, path: str, out: list[str]) -> None:
    if len(out) >= MAX_PROBLEMS:
        return
    if value is None:
        if schema.get("nullable") or not schema.get("type"):
            return
        out.append(f"{path}: must be {_article(schema['type'])}, got null")
        return
    kind = schema.get("type")
    if kind is not None and not _has_type(value, kind):
        out.append(f"{path}: must be {_article(kind)}, got {_show(value)}")
        return
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(_show(c) for c in schema["enum"])
        out.append(f"{path}: must be one of {choices}, got {_show(value)}")
    if _is_number(value):
        _check_bounds(schema, value, path, out)
    if isinstance(value, str):
        _check_length(schema, len(value), "characters", "minLength", "maxLength", path, out)
        pattern = schema.get("pattern")
        if pattern is not None and not re.search(pattern, value):
            out.append(f"{path}: must match {pattern!r}, got {_show(value)}")
    if isinstance(value, list):
        _check_length(schema, len(value), "items", "minItems", "maxItems", path, out)
        items = schema.get("items")
        if isinstance(items, dict):
            for i, item in enumerate(value):
                _validate(items, item, f"{path}[{i}]", out)
    if isinstance(value, dict):
        _check_object(schema, value, path, out)


def _check_object(schema: dict[str, Any], value: dict[str, Any], path: str, out: list[str]) -> None:
    properties: dict[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in value:
            out.append(f"{path}.{name}: required")
    additional = schema.get("additionalProperties")
    for name, item in value.items():
        if name in properties:
            _validate(properties[name], item, f"{path}.{name}", out)
        elif isinstance(additional, dict):
            _validate(additional, item, f"{path}.{name}", out)
        elif additional is False or (
            properties
            and additional is None
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            # Structural schemas prune unknown fields; here they are refused instead,
            # because a silently dropped field would be a silently lost write.
            known = ", ".join(sorted(properties)) or "none"
            out.append(f"{path}.{name}: unknown field (known: {known})")


def _check_bounds(schema: dict[str, Any], value: float, path: str, out: list[str]) -> None:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None:
        if schema.get("exclusiveMinimum") and not value > low:
            out.append(f"{path}: must be > {low}, got {_show(value)}")
        elif value < low:
            out.append(f"{path}: must be >= {low}, got {_show(value)}")
    if high is not None:
        if schema.get("exclusiveMaximum") and not value < high:
            out.append(f"{path}: must be < {high}, got {_show(value)}")
        elif value > high:
            out.append(f"{path}: must be <= {high}, got {_show(value)}")


def _check_length(
    schema: dict[str, Any], size: int, unit: str, low: str, high: str, path: str, out: list[str]
) -> None:
    if low in schema and size < schema[low]:
        out.append(f"{path}: must have at least {schema[low]} {unit}, got {size}")
    if high in schema and size > schema[high]:
        out.append(f"{path}: must have at most {schema[high]} {unit}, got {size}")


def _has_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return _is_number(value)
    return False


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
