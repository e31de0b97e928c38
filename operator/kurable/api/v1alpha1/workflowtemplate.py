"""`WorkflowTemplate`: a reusable, versioned definition that Workflows run."""

from __future__ import annotations

from ._base import Conditions, Duration, JSONObject, JSONValue, Model, UserSchema
from .workflow import Retry, Steps


class WorkflowTemplateSpec(Model):
    """A definition; a run pins the generation it started with."""

    input_schema: UserSchema | None = None
    """OpenAPI v3 schema of `input`, checked when a run starts."""
    steps: Steps
    """The steps, as in a Workflow."""
    output: JSONValue = None
    """The run's result (`${ }` expressions over `steps`, `vars`, `input`)."""
    retry: Retry | None = None
    """Default retry policy of the steps."""
    timeout: Duration | None = None
    """Default timeout of a whole run."""


class WorkflowTemplateStatus(Model):
    """The operator's verdict on the definition."""

    phase: str | None = None
    """Valid or Invalid."""
    message: str | None = None
    """What to fix, when Invalid."""
    observed_generation: int | None = None
    """The metadata.generation validated."""
    conditions: Conditions | None = None
    """Ready."""
    kopf: JSONObject | None = None
    """The framework's own bookkeeping (kopf)."""
