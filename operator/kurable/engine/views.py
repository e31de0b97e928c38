"""Views, the pure part: what a View's spec means, which row a source item makes, and how a
query's parameters bind.

A View turns one durable stream into rows. Each stream item is one source's state at one
version: an entity's event in its type's stream (`{entity: {name, namespace, uid}, version,
state, ...}`) or a run's change in its template's stream (`{run: {...}, input, output,
vars, error, seq}`). A source's row is a pure function of its latest item: the `where`
expression says whether it has one, the columns' expressions compute it. So applying an
item again, or items of a source in order from any point, gives the same rows: the
materializer (kurable.executor.views) relies on that for exactly-once across crashes.

The SQL side (tables, the authorizer, preparing queries) is in kurable.executor.view_db;
this module only names things and decides values.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import expressions

ENTITY_VARIABLES = ("entity", "state")
"""The CEL variables of a View over entities: `entity` (name, namespace, uid), `state`."""
RUN_VARIABLES = ("run", "input", "output", "vars", "error")
"""The CEL variables of a View over runs."""
RESERVED_COLUMNS = ("_key", "_version")
"""Kurable's own columns: the source's uid and the version its row was computed from."""
SQL_TYPES = {
    "string": "TEXT",
    "integer": "INTEGER",
    "number": "REAL",
    "boolean": "INTEGER",
    "json": "TEXT",
}
"""A column type -> its SQLite column type."""

RESERVED_PARAMS = ("continue", "minOffset")
"""Query-string names the endpoint's query route keeps for itself (the continue token and
read-your-writes): no query parameter may be named so."""


class ViewError(Exception):
    """A problem a caller can fix: `path` names the field (`params.min`,
    `spec.columns.tier.value`), `message` says what is wrong."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}")


@dataclass(frozen=True)
class Column:
    """One column: name, type (`string`, `integer`, ...) and its CEL expression."""

    name: str
    type: str
    value: str


@dataclass(frozen=True)
class Param:
    """A query parameter."""

    name: str
    type: str
    default: Any = None
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Query:
    """A named query: its SQL and parameters."""

    name: str
    sql: str
    params: tuple[Param, ...]


@dataclass(frozen=True)
class Plan:
    """What a View's spec means. `digest` changes with anything that changes the rows
    (source, where, columns, indexes): a new digest means a new table to build."""

    namespace: str
    name: str
    source_kind: str
    """`entities` or `runs`."""
    source_name: str
    """The EntityType's name, or the WorkflowTemplate's."""
    where: str | None
    columns: tuple[Column, ...]
    indexes: tuple[tuple[str, ...], ...]
    queries: Mapping[str, Query]
    digest: str

    @property
    def variables(self) -> tuple[str, ...]:
        return ENTITY_VARIABLES if self.source_kind == "entities" else RUN_VARIABLES


def plan(namespace: str, name: str, spec: Mapping[str, Any]) -> Plan:
    """The Plan of a View's spec (as the API server stores it: camelCase). Does not check
    expressions or SQL: see `problems` and kurable.executor.view_db.check."""
    source = spec.get("source") or {}
    if source.get("entityType"):
        kind, source_name = "entities", str(source["entityType"])
    else:
        kind = "runs"
        source_name = str(((source.get("workflows") or {}).get("templateRef") or {}).get("name"))
    columns = tuple(
        Column(str(n), str(c.get("type", "string")), str(c.get("value", "")))
        for n, c in (spec.get("columns") or {}).items()
    )
    indexes = tuple(tuple(str(c) for c in index) for index in spec.get("indexes") or ())
    queries = {
        str(qn): Query(
            str(qn),
            str(q.get("sql", "")),
            tuple(
                Param(
                    str(pn),
                    str(p.get("type", "string")),
                    p.get("default"),
                    "default" not in p or p.get("default") is None,
                    p.get("minimum"),
                    p.get("maximum"),
                )
                for pn, p in (q.get("params") or {}).items()
            ),
        )
        for qn, q in (spec.get("queries") or {}).items()
    }
    rows_shape = {
        "source": {"kind": kind, "name": source_name},
        "where": spec.get("where"),
        "columns": [[c.name, c.type, c.value] for c in columns],
        "indexes": [list(i) for i in indexes],
    }
    digest = hashlib.sha256(json.dumps(rows_shape, sort_keys=True).encode()).hexdigest()[:12]
    return Plan(
        namespace, name, kind, source_name, spec.get("where"), columns, indexes, queries, digest
    )


def problems(view: Plan) -> list[ViewError]:
    """What is wrong with the View's expressions and names (the SQL is checked by
    kurable.executor.view_db.check): each problem names its field."""
    found: list[ViewError] = []
    names = view.variables
    if view.where:
        try:
            expressions.check_names(view.where, names, "spec.where")
        except expressions.ExpressionError as e:
            found.append(ViewError("spec.where", _what(e)))
    for column in view.columns:
        at = f"spec.columns.{column.name}"
        if column.name in RESERVED_COLUMNS:
            found.append(ViewError(at, f"{column.name} is Kurable's own column; rename it"))
        try:
            expressions.check_names(column.value, names, f"{at}.value")
        except expressions.ExpressionError as e:
            found.append(ViewError(f"{at}.value", _what(e)))
    for query in view.queries.values():
        for param in query.params:
            if param.name in RESERVED_PARAMS:
                found.append(
                    ViewError(
                        f"spec.queries.{query.name}.params.{param.name}",
                        f"{param.name} is the endpoint's own query-string name (paging and "
                        "read-your-writes), so no request could give it; rename the parameter",
                    )
                )
    known = {c.name for c in view.columns}
    for i, index in enumerate(view.indexes):
        for column_name in index:
            if column_name not in known:
                found.append(ViewError(f"spec.indexes[{i}]", f"no column {column_name!r} to index"))
    return found


def _what(error: expressions.ExpressionError) -> str:
    """The error without its location (the ViewError's path says where)."""
    return f"expression {error.expression!r}: {error.problem}"


def context_of(view: Plan, value: Mapping[str, Any]) -> dict[str, Any]:
    """The CEL variables of one stream item's value."""
    if view.source_kind == "entities":
        return {"entity": dict(value.get("entity") or {}), "state": value.get("state") or {}}
    return {name: value.get(name) for name in RUN_VARIABLES}


def source_name(view: Plan, value: Mapping[str, Any]) -> str:
    """Which source a stream item's value is about: `entity NAME` or `run NAME` ("" when
    the value does not say)."""
    kind = "entity" if view.source_kind == "entities" else "run"
    about = value.get(kind)
    name = about.get("name") if isinstance(about, Mapping) else None
    return f"{kind} {name}" if name else ""


def version_of(view: Plan, value: Mapping[str, Any]) -> int:
    """The source's version an item carries: the entity version, or the run change's seq."""
    return int(value.get("version" if view.source_kind == "entities" else "seq") or 0)


def row_of(view: Plan, value: Mapping[str, Any]) -> dict[str, Any] | None:
    """The row one stream item's source has (column -> SQLite value), None when `where`
    is false. Raises ExpressionError when an expression fails on this source (the
    materializer then leaves it without a row and says so)."""
    context = context_of(view, value)
    if view.where and not expressions.condition(view.where, context):
        return None
    row: dict[str, Any] = {}
    for column in view.columns:
        row[column.name] = to_sql(
            column, expressions.render(column.value, context, f"columns.{column.name}")
        )
    return row


def to_sql(column: Column, value: Any) -> Any:
    """A computed JSON value as the column stores it; raises ExpressionError when it has
    the wrong type (an integer column given text, ...)."""
    if value is None:
        return None
    kind = column.type
    if kind == "json":
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }[kind]
    if not ok:
        raise expressions.ExpressionError(
            column.value, f"column {column.name} is {kind}, got {json.dumps(value)}"
        )
    return int(value) if kind == "boolean" else value


def bind(query: Query, given: Mapping[str, Any]) -> dict[str, Any]:
    """The query's parameters as SQLite binds them: each given value (text from a URL or
    the CLI, or JSON from a step) converted to its type and checked against its bounds,
    defaults filled in. Raises ViewError(`params.<name>`) for a missing, unknown,
    mistyped or out-of-range parameter."""
    declared = {p.name: p for p in query.params}
    for name in given:
        if name not in declared:
            shown = ", ".join(sorted(declared)) or "none"
            raise ViewError(f"params.{name}", f"query {query.name} has no such parameter ({shown})")
    bound: dict[str, Any] = {}
    for p in query.params:
        if p.name in given and given[p.name] is not None:
            bound[p.name] = _convert(p, given[p.name])
        elif not p.required:
            bound[p.name] = _convert(p, p.default)
        else:
            raise ViewError(f"params.{p.name}", f"query {query.name} needs parameter {p.name}")
    return bound


def _convert(p: Param, value: Any) -> Any:
    at = f"params.{p.name}"
    try:
        if p.type == "string":
            converted: Any = value if isinstance(value, str) else json.dumps(value)
        elif p.type == "boolean":
            if isinstance(value, bool):
                converted = value
            elif str(value).lower() in ("true", "false"):
                converted = str(value).lower() == "true"
            else:
                raise ValueError
            converted = int(converted)
        elif p.type == "integer":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            converted = int(value)
        else:
            if isinstance(value, bool):
                raise ValueError
            converted = float(value)
            if not math.isfinite(converted):
                raise ValueError
    except (TypeError, ValueError):
        raise ViewError(
            at, f"must be {'an' if p.type == 'integer' else 'a'} {p.type}, got {json.dumps(value)}"
        ) from None
    if p.type in ("integer", "number"):
        if p.minimum is not None and converted < p.minimum:
            raise ViewError(at, f"must be at least {_number(p.minimum)}, got {converted}")
        if p.maximum is not None and converted > p.maximum:
            raise ViewError(at, f"must be at most {_number(p.maximum)}, got {converted}")
    return converted


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def from_sql(view: Plan, names: list[str], values: tuple[Any, ...]) -> dict[str, Any]:
    """A result row as JSON: json columns parsed, boolean columns as true/false (for a
    result column named like a view column), a BLOB (`randomblob()`, `CAST(... AS BLOB)`)
    as its base64 text (RFC 4648, section 4): JSON has no bytes."""
    types = {c.name: c.type for c in view.columns}
    row: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        kind = types.get(name)
        if isinstance(value, bytes):
            value = base64.b64encode(value).decode("ascii")
        elif kind == "json" and isinstance(value, str):
            value = json.loads(value)
        elif kind == "boolean" and isinstance(value, int):
            value = bool(value)
        row[name] = value
    return row
