"""The one schema dialect of user schemas: structural OpenAPI v3, as CRD authors write it.

Template `inputSchema`, entity `stateSchema` and command `inputSchema` all use it. The
words: `type`, `properties`, `required`, `items`, `additionalProperties` (a schema),
`enum`, `format`, `nullable`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`
(booleans, as in OpenAPI 3.0), `multipleOf`, `minLength`, `maxLength`, `pattern`,
`minItems`, `maxItems`, `uniqueItems`, `minProperties`, `maxProperties`,
`x-kubernetes-preserve-unknown-fields`; `description`, `title`, `default` and `example`
only document. Any other word is refused by `check_schema`, so that a schema never
silently checks less than it says.

`openapi-schema-validator`'s OAS 3.0 validator does the checking, both of values against a
user's schema and of a user's schema against `META_SCHEMA` (the dialect written as a
schema); this module turns Kubernetes' structural rules into that validator's terms and
its errors into messages.

Where Kubernetes would prune, this dialect refuses, the way `kubectl apply
--validate=strict` refuses unknown fields: stored state and inputs are not rewritten,
and a silently dropped field would be a silently lost write.
- An object whose schema lists `properties` refuses fields it does not list, unless
  `x-kubernetes-preserve-unknown-fields: true`. An object schema without `properties` or
  `additionalProperties` accepts any fields (Kubernetes would prune them all).
- `null` is refused unless `nullable: true` (Kubernetes prunes it). A nullable field
  accepts `null` whatever its other words say (its `enum` need not list null).
- `properties` and `additionalProperties` together are refused, as in a CRD;
  `additionalProperties` must be a schema (`false` is what unlisted fields get anyway).
- Departures, on purpose: `type` may be omitted (any type); `uniqueItems: true` is
  allowed (a CRD refuses it for its cost on large lists); `default` documents and is
  checked against the schema, it is not filled in; `allOf`, `anyOf`, `oneOf`, `not`,
  `x-kubernetes-int-or-string` and the other `x-kubernetes-*` words are refused.
- `format` is checked for `CHECKED_FORMATS`; other formats only document (as in Kubernetes).

Problems are reported as `<path>: <what is wrong>`, e.g. `input.amount: must be >= 1, got 0`,
`input.items[2]: must be an integer, got "x"`.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

from openapi_schema_validator import OAS30Validator, oas30_format_checker

TYPES = ("object", "array", "string", "integer", "number", "boolean")
CHECKED_FORMATS = frozenset(
    {"date", "date-time", "email", "ipv4", "ipv6", "uuid", "byte", "int32", "int64"}
    | {"float", "double", "password"}
)
"""Formats whose values are checked; Kubernetes checks these too. Others only document."""
MAX_PROBLEMS = 5
"""Reported problems per validation; the first ones are what a user fixes first."""

_MESSAGE = "x-kurable-message"
"""A META_SCHEMA node's own wording of its problem ({value} is the offending value)."""
_NUMBER = {"type": "number", _MESSAGE: "must be a number"}
_COUNT = {"type": "integer", "minimum": 0, _MESSAGE: "must be a non-negative integer"}
_FLAG = {"type": "boolean", _MESSAGE: "must be true or false"}
_NOTE = {"type": "string", _MESSAGE: "must be a string"}
META_SCHEMA: dict[str, Any] = {
    "type": "object",
    _MESSAGE: "a schema must be an object, got {value}",
    "properties": {
        "type": {"type": "string", "enum": list(TYPES)},
        "properties": {"type": "object", "additionalProperties": {"$ref": "#"}},
        "required": {
            "type": "array",
            "items": {"type": "string"},
            _MESSAGE: "must be a list of property names",
        },
        "additionalProperties": {"$ref": "#"},
        "items": {"$ref": "#"},
        "enum": {"type": "array", _MESSAGE: "must be a list"},
        "nullable": _FLAG,
        "format": _NOTE,
        "minimum": _NUMBER,
        "maximum": _NUMBER,
        "exclusiveMinimum": _FLAG,
        "exclusiveMaximum": _FLAG,
        "multipleOf": {
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": True,
            _MESSAGE: "must be a number > 0",
        },
        "minLength": _COUNT,
        "maxLength": _COUNT,
        "pattern": {
            "type": "string",
            "format": "regex",
            _MESSAGE: "not a regular expression: {value}",
        },
        "minItems": _COUNT,
        "maxItems": _COUNT,
        "uniqueItems": _FLAG,
        "minProperties": _COUNT,
        "maxProperties": _COUNT,
        "x-kubernetes-preserve-unknown-fields": _FLAG,
        "description": _NOTE,
        "title": _NOTE,
        "default": {},
        "example": {},
    },
    "additionalProperties": False,
    "not": {
        "type": "object",
        "required": ["properties", "additionalProperties"],
        _MESSAGE: "properties and additionalProperties cannot be used together (as in a "
        "CRD): list every field in properties, or give one schema for all values",
    },
}
"""The dialect as an OpenAPI 3.0 schema: what `check_schema` holds a user's schema to."""

_META = OAS30Validator(META_SCHEMA, format_checker=oas30_format_checker)


def check_schema(schema: Any, where: str) -> list[str]:
    """Problems with a schema itself (unknown words, wrong shapes), each located under `where`.

    `schema` is any JSON value; `where` names it (`spec.stateSchema`). Returns at most
    MAX_PROBLEMS messages, empty when the schema is usable by `validate`.
    """
    problems = _messages(_META.iter_errors(schema), where, meta=True)
    return problems or _unfit_defaults(schema, where)[:MAX_PROBLEMS]


def validate(schema: dict[str, Any], value: Any, path: str) -> list[str]:
    """Problems of `value` against `schema` (at most MAX_PROBLEMS), each naming its path.

    `schema` must have passed `check_schema`; `path` names the value (`input`, `state`).
    """
    checker = OAS30Validator(_structural(schema), format_checker=oas30_format_checker)
    return _messages(checker.iter_errors(value), path, meta=False)


def _structural(schema: Any) -> Any:
    """`schema` in the validator's terms: unknown fields refused, unchecked formats dropped."""
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k != "format" or v in CHECKED_FORMATS}
    if isinstance(schema.get("properties"), dict):
        out["properties"] = {k: _structural(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for word in ("items", "additionalProperties"):
        if isinstance(schema.get(word), dict):
            out[word] = _structural(schema[word])
    return out


def _unfit_defaults(schema: dict[str, Any], where: str) -> list[str]:
    """Problems of every `default` against the schema it stands in (a CRD refuses them too)."""
    problems = []
    if "default" in schema:
        problems += validate(schema, schema["default"], f"{where}.default")
    for name, sub in (schema.get("properties") or {}).items():
        problems += _unfit_defaults(sub, f"{where}.properties.{name}")
    for word in ("items", "additionalProperties"):
        if word in schema:
            problems += _unfit_defaults(schema[word], f"{where}.{word}")
    return problems


def _messages(errors: Iterable[Any], root: str, *, meta: bool) -> list[str]:
    """The validator's errors as `<root><path>: <what to fix>`, unique, at most MAX_PROBLEMS.

    A value of the wrong type gets only that complaint, not every rule its type would fail.
    """
    found = list(itertools.islice(errors, 10 * MAX_PROBLEMS))
    mistyped = {tuple(e.absolute_path) for e in found if e.validator == "type"}
    out: list[str] = []
    for error in found:
        if error.validator != "type" and tuple(error.absolute_path) in mistyped:
            continue
        for message in _explain(error, root, meta=meta):
            if message not in out:
                out.append(message)
    return out[:MAX_PROBLEMS]


def _explain(error: Any, root: str, *, meta: bool) -> list[str]:
    """The messages for one validator error (several for several unknown fields)."""
    where = root + _path(error.absolute_path)
    value, schema, rule, word = error.instance, error.schema, error.validator_value, error.validator
    if meta and word == "not":
        return [f"{where}: {rule[_MESSAGE]}"]
    if meta and word == "type" and _ends_in_word(error.absolute_path, "additionalProperties"):
        return [
            f"{where}: must be a schema for the values of fields, got {_show(value)} (as in a "
            "CRD; fields not listed in properties are refused already)"
        ]
    if meta and word != "additionalProperties" and _MESSAGE in schema:
        return [f"{where}: {schema[_MESSAGE].format(value=_show(value))}"]
    if value is None and schema.get("nullable") is True:
        return []  # a nullable field accepts null whatever its other words say
    if meta and word == "additionalProperties":
        unknown = sorted(set(value) - set(schema["properties"]))
        return [f"{where}: unsupported schema keyword(s) {', '.join(unknown)}"]
    if word == "additionalProperties":
        known = ", ".join(sorted(schema.get("properties") or {})) or "none"
        unknown = sorted(set(value) - set(schema.get("properties") or {}))
        return [f"{where}.{name}: unknown field (known: {known})" for name in unknown]
    if word == "required":
        return [f"{where}.{name}: required" for name in rule if name not in value]
    if word == "type":
        return [f"{where}: must be {_article(rule)}, got {_show(value)}"]
    if word == "enum":
        choices = ", ".join(str(c) if meta else _show(c) for c in rule)
        return [f"{where}: must be one of {choices}, got {_show(value)}"]
    if word == "minimum":
        op = ">" if schema.get("exclusiveMinimum") else ">="
        return [f"{where}: must be {op} {rule}, got {_show(value)}"]
    if word == "maximum":
        op = "<" if schema.get("exclusiveMaximum") else "<="
        return [f"{where}: must be {op} {rule}, got {_show(value)}"]
    if word in _SIZES:
        bound, unit = _SIZES[word]
        return [f"{where}: must have {bound} {rule} {unit}, got {len(value)}"]
    if word == "pattern":
        return [f"{where}: must match {rule!r}, got {_show(value)}"]
    if word == "format":
        return [f"{where}: must be a valid {rule}, got {_show(value)}"]
    if word == "multipleOf":
        return [f"{where}: must be a multiple of {rule}, got {_show(value)}"]
    if word == "uniqueItems":
        return [f"{where}: must not repeat items"]
    return [f"{where}: {error.message}"]


_SIZES = {
    "minLength": ("at least", "characters"),
    "maxLength": ("at most", "characters"),
    "minItems": ("at least", "items"),
    "maxItems": ("at most", "items"),
    "minProperties": ("at least", "fields"),
    "maxProperties": ("at most", "fields"),
}


def _ends_in_word(parts: Iterable[Any], word: str) -> bool:
    """Whether a path into a schema ends in the schema word `word`, not a property name."""
    last, naming = None, False
    for part in parts:
        last, naming = (None, False) if naming else (part, part == "properties")
    return last == word


def _path(parts: Iterable[Any]) -> str:
    """`.items[2].name` from ("items", 2, "name")."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _article(kind: Any) -> str:
    kind = str(kind)
    return f"an {kind}" if kind[:1] in ("a", "e", "i", "o", "u") else f"a {kind}"


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
