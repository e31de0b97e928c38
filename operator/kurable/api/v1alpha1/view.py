"""`View`: rows computed with CEL from entity state or runs, and named read-only SQL queries."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._base import Conditions, Expression, JSONObject, JSONValue, Model, ObjectRef, cel, validations

COLUMN_TYPES = ("string", "integer", "number", "boolean", "json")
"""A column's type: its SQLite storage (TEXT, INTEGER, REAL, INTEGER 0/1, TEXT of JSON)."""

ColumnName = Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z_][a-z0-9_]*$")]
"""A column or parameter name: lower-case letters, digits and `_` (an SQL identifier)."""


class WorkflowsSource(Model):
    """The runs of one WorkflowTemplate."""

    template_ref: ObjectRef
    """The WorkflowTemplate whose runs have a row each."""


class ViewSource(Model):
    """Where the rows come from: the entities of one type, or the runs of one template."""

    entity_type: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """An EntityType's name: a row per entity (CEL variables `entity` and `state`)."""
    workflows: WorkflowsSource | None = None
    """Runs of a template: a row per run (CEL `run`, `input`, `output`, `vars`, `error`)."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.entityType) != has(self.workflows)",
                "set exactly one of entityType and workflows",
            )
        )
    }


class Column(Model):
    """One column: its type and the CEL expression computing it."""

    type: Literal["string", "integer", "number", "boolean", "json"]
    """string, integer, number, boolean or json."""
    value: Expression
    """`${ CEL }` over the source's variables."""


class Param(Model):
    """A query parameter, bound (never interpolated) as `:name`."""

    type: Literal["string", "integer", "number", "boolean"]
    """string, integer, number or boolean."""
    default: JSONValue = None
    """The value when the caller gives none; without a default the parameter is required."""
    minimum: float | None = None
    """The smallest value allowed (integer and number)."""
    maximum: float | None = None
    """The largest value allowed (integer and number)."""


class Query(Model):
    """A named read-only query over the view's table (named like the View)."""

    sql: Annotated[str, Field(min_length=1, max_length=8192)]
    """One SELECT over the view's own table, with `:name` parameters."""
    params: dict[str, Param] | None = None
    """The parameters, by name (lower-case identifiers)."""


class ViewSpec(Model):
    """The source, the rows' columns, indexes and queries."""

    source: ViewSource
    """Entities of a type, or runs of a template."""
    where: Expression | None = None
    """CEL: which sources have a row (false or absent: no row)."""
    columns: Annotated[dict[str, Column], Field(min_length=1, max_length=64)]
    """The columns, by name (lower-case identifiers; `_key` and `_version` are Kurable's)."""
    indexes: (
        Annotated[list[Annotated[list[str], Field(min_length=1)]], Field(max_length=16)] | None
    ) = None
    """Indexes, each a list of column names."""
    queries: Annotated[dict[str, Query], Field(min_length=1, max_length=64)]
    """The named queries."""


class ViewStatus(Model):
    """How far the view's rows are, in the operator's own copy."""

    phase: str | None = None
    """Ready, Building or Invalid."""
    message: str | None = None
    """What to fix (Invalid), or the build's progress (Building)."""
    offset: int | None = None
    """The stream offset (etcd revision) the rows include."""
    lag: int | None = None
    """Stream items not yet applied."""
    rows: int | None = None
    """Rows in the table."""
    failed: int | None = None
    """Sources (entities or runs) without a row because an expression failed on them
    (condition Degraded names the first)."""
    observed_generation: int | None = None
    """The metadata.generation validated."""
    conditions: Conditions | None = None
    """Ready, Building, Invalid, Degraded."""
    kopf: JSONObject | None = None
    """The framework's own bookkeeping (kopf)."""
