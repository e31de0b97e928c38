"""WorkflowTemplate handlers: validate a definition and say so in status.

Runs pin the template they start with (see workflow.py), so a template can be edited
or deleted at any time without changing a run in flight.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kurable.api.v1alpha1 import GROUP, VERSION, WORKFLOW_TEMPLATE
from kurable.engine.conditions import updated_condition
from kurable.engine.journal import now_rfc3339
from kurable.engine.validate import describe, template_problems

Logger = logging.Logger | logging.LoggerAdapter[Any]


def verdict(spec: dict[str, Any]) -> str | None:
    """None when the definition is valid, else every problem and what to fix."""
    return describe(template_problems(spec)) or None


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
