"""Kurable's API, version v1alpha1: one module per kind, each model also its CRD schema."""

from __future__ import annotations

from ._base import (
    API_VERSION,
    GROUP,
    HORIZON_SECONDS,
    VERSION,
    Condition,
    duration_seconds,
    parse_duration,
)
from ._kinds import (
    ENTITY,
    ENTITY_TYPE,
    KINDS,
    WORKFLOW,
    WORKFLOW_TEMPLATE,
    PrinterColumn,
    ResourceKind,
)
from .entity import EntitySpec, EntityStatus
from .entitytype import EntityTypeSpec, EntityTypeStatus
from .workflow import ACTIONS, Step, StepStatus, WorkflowSpec, WorkflowStatus
from .workflowtemplate import WorkflowTemplateSpec, WorkflowTemplateStatus

__all__ = [
    "ACTIONS",
    "API_VERSION",
    "ENTITY",
    "ENTITY_TYPE",
    "GROUP",
    "HORIZON_SECONDS",
    "KINDS",
    "VERSION",
    "WORKFLOW",
    "WORKFLOW_TEMPLATE",
    "Condition",
    "EntitySpec",
    "EntityStatus",
    "EntityTypeSpec",
    "EntityTypeStatus",
    "PrinterColumn",
    "ResourceKind",
    "Step",
    "StepStatus",
    "WorkflowSpec",
    "WorkflowStatus",
    "WorkflowTemplateSpec",
    "WorkflowTemplateStatus",
    "duration_seconds",
    "parse_duration",
]
