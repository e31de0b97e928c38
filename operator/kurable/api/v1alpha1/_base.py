"""Building blocks shared by every kind: the model base, durations, conditions."""

from __future__ import annotations

import re
from datetime import timedelta
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "kurable.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def cel(rule: str, message: str, **extra: Any) -> dict[str, Any]:
    """One `x-kubernetes-validations` rule (CEL, evaluated by the API server)."""
    return {"rule": rule, "message": message, **extra}


def validations(*rules: dict[str, Any]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules for a model or a field."""
    return {"x-kubernetes-validations": list(rules)}


class Model(BaseModel):
    """Base of every API object: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as Kubernetes stores it (camelCase, no unset fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_status(self) -> dict[str, Any]:
        """The object as a status patch: camelCase, the fields that were set, nulls
        included (in a merge patch, null clears a field that no longer applies)."""
        return self.model_dump(by_alias=True, exclude_unset=True)


_DURATION_PART = r"[0-9]+([.][0-9]+)?(ms|s|m|h|d)"
DURATION_PATTERN = rf"^({_DURATION_PART})+$"
_DURATION_RE = re.compile(rf"({_DURATION_PART})")
_UNIT_SECONDS = {
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
    "d": Fraction(86400),
}

Duration = Annotated[
    str,
    Field(
        max_length=64,
        json_schema_extra=validations(
            cel(
                f"self.matches('{DURATION_PATTERN}')",
                "must be a duration such as 500ms, 30s, 5m, 1h30m or 2d",
            )
        ),
    ),
]
"""A duration written as Go and Kubernetes write them: `30s`, `1h30m`, `2d`."""


HORIZON_SECONDS = 365_000 * 86_400
"""The longest duration Kurable reads (1000 years, in seconds): a longer one, which the
schema allows (any number of digits), reads as this horizon. A sleep, timeout or delay of
1000 years never ends in practice, and `now` plus the horizon still fits a datetime
(year 9999) and a timedelta (999,999,999 days)."""


def duration_seconds(text: str) -> float:
    """The seconds of a duration such as `1h30m` or `500ms`, as a float, at most
    `HORIZON_SECONDS` (a longer duration reads as the horizon: it means never). Raises
    ValueError naming the text when it is not a duration."""
    if not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"{text!r} is not a duration (use e.g. 500ms, 30s, 5m, 1h30m, 2d)")
    # Summed exactly, rounded once: `5m8ms0.462s` is 300.47, not 300.46999999999997.
    exact = sum(
        Fraction(m.group(1)[: -len(m.group(3))]) * _UNIT_SECONDS[m.group(3)]
        for m in _DURATION_RE.finditer(text)
    )
    return float(min(exact, Fraction(HORIZON_SECONDS)))


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as `1h30m` or `500ms`, at most `HORIZON_SECONDS` long (a
    longer one reads as the horizon); raise ValueError naming the text when it is not a
    duration. Never raises OverflowError: every duration the schema accepts is usable."""
    return timedelta(seconds=duration_seconds(text))


Name = Annotated[
    str,
    Field(min_length=1, max_length=63, pattern=r"^[A-Za-z_][A-Za-z0-9_-]*$"),
]
"""A step, variable or branch name: letters, digits, `_` and `-`, starting with a letter."""

Expression = Annotated[str, Field(max_length=4096)]
"""A CEL expression, bare (`input.amount > 0`) or wrapped (`${ input.amount > 0 }`)."""

JSONValue = Annotated[Any, Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]
"""Any JSON value; strings may hold `${ CEL }` expressions where the field says so."""

JSONObject = Annotated[
    dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
]
"""A JSON object with free-form content."""


YAML11_BOOLEAN_KEY_MESSAGE = (
    'has a key "true" or "false": YAML 1.1 (kubectl\'s reader) reads an unquoted key n, y, '
    'no, yes, on or off as a boolean; quote the key ("n": ...)'
)
"""Why a key `true`/`false` is refused: it is almost always a YAML 1.1 boolean in disguise."""


def no_boolean_keys(expr: str) -> str:
    """A CEL rule: the map `expr` has no key "true" or "false" (the YAML 1.1 readings)."""
    return f"!('true' in {expr}) && !('false' in {expr})"


UserSchema = Annotated[
    dict[str, Any],
    Field(
        json_schema_extra={
            "x-kubernetes-preserve-unknown-fields": True,
            # Declared as a map of schemas, so that CEL sees its keys (it sees nothing
            # undeclared inside a preserve-unknown-fields object).
            "properties": {
                "properties": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "x-kubernetes-preserve-unknown-fields": True,
                    },
                    **validations(cel(no_boolean_keys("self"), YAML11_BOOLEAN_KEY_MESSAGE)),
                }
            },
        }
    ),
]
"""An OpenAPI v3 schema written by the user (`inputSchema`, `stateSchema`)."""


class Condition(Model):
    """A Kubernetes condition, as in metav1.Condition."""

    type: str
    """Condition type, e.g. `Succeeded`, `Ready`, `Suspended`, `Stalled`."""
    status: Literal["True", "False", "Unknown"]
    """`True`, `False` or `Unknown`."""
    reason: str = ""
    """One CamelCase word saying why."""
    message: str = ""
    """Human-readable detail."""
    last_transition_time: str | None = None
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed from."""


Conditions = Annotated[
    list[Condition],
    Field(
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        }
    ),
]


class ObjectRef(Model):
    """A reference to another Kurable object in the same namespace."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the referenced object."""
