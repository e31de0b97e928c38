"""WorkflowTemplate handlers: validate a definition and say so in status.

Runs pin the template they start with (see workflow.py), so a template can be edited
or deleted at any time without changing a run in flight.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from pydantic import ValidationError

from kurable.api.v1alpha1 import GROUP, VERSION, WORKFLOW_TEMPLATE, WorkflowTemplateSpec
from kurable.engine import expressions
from kurable.engine import schema as user_schema
from kurable.engine.conditions import updated_condition
from kurable.engine.journal import now_rfc3339
from kurable.executor.runs import _validation_message, check_expressions

Logger = logging.Logger | logging.LoggerAdapter[Any]


def verdict(spec: dict[str, Any]) -> str | None:
    """None when the definition is valid, else what to fix."""
    try:
        template = WorkflowTemplateSpec.model_validate(spec)
    except ValidationError as e:
        return _validation_message(e, "spec")
    if template.input_schema is not None:
        problems = user_schema.check_schema(template.input_schema, "spec.inputSchema")
        if problems:
            return "; ".join(problems)
    try:
        check_expressions(template, "spec")
    except expressions.ExpressionError as e:
        return str(e)
    names = {s.name for s in template.steps}
    for step in template.steps:
        for target, field in (
            (step.next, "next"),
            (step.on_failure and step.on_failure.goto, "onFailure.goto"),
        ):
            if target is not None and target not in names:
                return f"spec.steps[{step.name}].{field}: no step named {target!r}"
    return None


@kopf.on.resume(GROUP, VERSION, WORKFLOW_TEMPLATE.plural)
@kopf.on.create(GROUP, VERSION, WORKFLOW_TEMPLATE.plural)
@kopf.on.update(GROUP, VERSION, WORKFLOW_TEMPLATE.plural, field="spec")
async def validate(
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    logger: Logger,
    **_: Any,
) -> None:
    """Validate the template and project the verdict into status."""
    problem = verdict(dict(spec))
    generation = meta.get("generation")
    phase = "Invalid" if problem else "Valid"
    patch.status["phase"] = phase
    patch.status["message"] = problem
    patch.status["observedGeneration"] = generation
    patch.status["conditions"] = [
        updated_condition(
            "Ready",
            "False" if problem else "True",
            phase,
            problem or "definition is valid",
            generation,
            status.get("conditions"),
            now_rfc3339(),
        ).to_status()
    ]
    if problem:
        logger.warning(f"invalid: {problem}")
