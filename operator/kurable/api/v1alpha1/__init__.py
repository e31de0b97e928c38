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
    CONSUMER,
    ENTITY,
    ENTITY_TYPE,
    KINDS,
    SCHEDULE,
    TOPIC,
    VIEW,
    WORKFLOW,
    WORKFLOW_TEMPLATE,
    PrinterColumn,
    ResourceKind,
)
from .consumer import ConsumerSpec, ConsumerStatus
from .entity import EntitySpec, EntityStatus
from .entitytype import EntityTypeSpec, EntityTypeStatus
from .schedule import CONCURRENCY_POLICIES, CRON_MACROS, ScheduleSpec, ScheduleStatus
from .topic import TopicSpec, TopicStatus
from .view import COLUMN_TYPES, ViewSpec, ViewStatus
from .workflow import ACTIONS, Step, StepStatus, WorkflowSpec, WorkflowStatus
from .workflowtemplate import WorkflowTemplateSpec, WorkflowTemplateStatus

__all__ = [
    "ACTIONS",
    "API_VERSION",
    "COLUMN_TYPES",
    "CONCURRENCY_POLICIES",
    "CONSUMER",
    "CRON_MACROS",
    "ENTITY",
    "ENTITY_TYPE",
    "GROUP",
    "HORIZON_SECONDS",
    "KINDS",
    "SCHEDULE",
    "TOPIC",
    "VERSION",
    "VIEW",
    "WORKFLOW",
    "WORKFLOW_TEMPLATE",
    "Condition",
    "ConsumerSpec",
    "ConsumerStatus",
    "EntitySpec",
    "EntityStatus",
    "EntityTypeSpec",
    "EntityTypeStatus",
    "PrinterColumn",
    "ResourceKind",
    "ScheduleSpec",
    "ScheduleStatus",
    "Step",
    "StepStatus",
    "TopicSpec",
    "TopicStatus",
    "ViewSpec",
    "ViewStatus",
    "WorkflowSpec",
    "WorkflowStatus",
    "WorkflowTemplateSpec",
    "WorkflowTemplateStatus",
    "duration_seconds",
    "parse_duration",
]
