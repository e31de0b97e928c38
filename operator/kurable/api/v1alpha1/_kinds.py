"""The kinds of v1alpha1: names, short names, printer columns, spec and status models."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from ._base import GROUP, VERSION
from .consumer import ConsumerSpec, ConsumerStatus
from .entity import EntitySpec, EntityStatus
from .entitytype import EntityTypeSpec, EntityTypeStatus
from .schedule import ScheduleSpec, ScheduleStatus
from .topic import TopicSpec, TopicStatus
from .view import ViewSpec, ViewStatus
from .workflow import WorkflowSpec, WorkflowStatus
from .workflowtemplate import WorkflowTemplateSpec, WorkflowTemplateStatus


@dataclass(frozen=True)
class PrinterColumn:
    """A column of `kubectl get`."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0


AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class ResourceKind:
    """One custom resource kind: what `kubectl` calls it and what it holds."""

    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    printer_columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)
    categories: tuple[str, ...] = ("kurable",)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group(self) -> str:
        return GROUP

    @property
    def version(self) -> str:
        return VERSION

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


WORKFLOW = ResourceKind(
    kind="Workflow",
    plural="workflows",
    # Not `wf`: Argo Workflows, which platform teams often run beside Kurable, has it
    # (and the plural `workflows`: `kubectl get workflows.kurable.dev` is unambiguous).
    short_names=("kwf",),
    spec=WorkflowSpec,
    status=WorkflowStatus,
    description="One run of a durable process: its steps are journaled in etcd as they commit.",
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", description="Where the run is"),
        PrinterColumn(
            "Reason", ".status.reason", description="Why the run ended (Timeout, Compensated, ...)"
        ),
        PrinterColumn("Template", ".spec.templateRef.name", description="The WorkflowTemplate"),
        PrinterColumn("Step", ".status.currentStep", description="The step being run"),
        PrinterColumn("Attempts", ".status.attempts", "integer", "Attempts of the step"),
        PrinterColumn("Done", ".status.stepsCompleted", "integer", "Steps finished", priority=0),
        PrinterColumn("Started", ".status.startedAt", "date", "When the run started", priority=1),
        PrinterColumn(
            "Finished", ".status.finishedAt", "date", "When the run finished", priority=1
        ),
        PrinterColumn("Message", ".status.message", priority=1),
        PrinterColumn(
            "Executor", ".status.executor", description="The replica driving the run", priority=1
        ),
        AGE,
    ),
)

WORKFLOW_TEMPLATE = ResourceKind(
    kind="WorkflowTemplate",
    plural="workflowtemplates",
    short_names=("wft",),
    spec=WorkflowTemplateSpec,
    status=WorkflowTemplateStatus,
    description=(
        "A reusable definition of a workflow; each run pins the generation it started with."
    ),
    printer_columns=(
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Message", ".status.message", priority=1),
        AGE,
    ),
)

ENTITY_TYPE = ResourceKind(
    kind="EntityType",
    plural="entitytypes",
    short_names=("et",),
    spec=EntityTypeSpec,
    status=EntityTypeStatus,
    description="The state schema, commands and event handlers of a kind of durable entity.",
    printer_columns=(
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Message", ".status.message", priority=1),
        AGE,
    ),
)

ENTITY = ResourceKind(
    kind="Entity",
    plural="entities",
    short_names=("ent",),
    spec=EntitySpec,
    status=EntityStatus,
    description=(
        "One durable stateful object; its state changes only through exactly-once commands."
    ),
    printer_columns=(
        PrinterColumn("Type", ".spec.type"),
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Version", ".status.version", "integer"),
        PrinterColumn("Message", ".status.message", priority=1),
        AGE,
    ),
)

SCHEDULE = ResourceKind(
    kind="Schedule",
    plural="schedules",
    short_names=("ksched",),
    spec=ScheduleSpec,
    status=ScheduleStatus,
    description=(
        "Starts runs of a WorkflowTemplate on a cron or an interval, exactly once per tick."
    ),
    printer_columns=(
        PrinterColumn("Schedule", ".status.schedule", description="The cadence"),
        PrinterColumn("Suspended", ".spec.suspend", "boolean"),
        PrinterColumn("Last", ".status.lastScheduleTime", "date", "The latest tick started"),
        PrinterColumn("Next", ".status.nextScheduleTime", "string", "The next tick"),
        PrinterColumn("Active", ".status.activeCount", "integer", "Runs not finished"),
        PrinterColumn("Message", ".status.message", priority=1),
        AGE,
    ),
)

TOPIC = ResourceKind(
    kind="Topic",
    plural="topics",
    short_names=("ktopic",),
    spec=TopicSpec,
    status=TopicStatus,
    description="A durable, ordered message log in etcd, trimmed by its retention.",
    printer_columns=(
        PrinterColumn("Messages", ".status.messages", "integer", "Messages kept"),
        PrinterColumn("Head", ".status.head", "integer", "The newest offset"),
        PrinterColumn("Message", ".status.message", priority=1),
        AGE,
    ),
)

CONSUMER = ResourceKind(
    kind="Consumer",
    plural="consumers",
    short_names=("kcons",),
    spec=ConsumerSpec,
    status=ConsumerStatus,
    description=(
        "Reacts to entity events, topic messages or run changes: one action per message, "
        "in key order, with an effect exactly once."
    ),
    printer_columns=(
        PrinterColumn("Source", ".status.source", description="What it consumes"),
        PrinterColumn("Lag", ".status.lag", "integer", "Messages behind the head"),
        PrinterColumn("Processed", ".status.processed", "integer", "Messages handled"),
        PrinterColumn("Message", ".status.message", priority=1),
        AGE,
    ),
)

VIEW = ResourceKind(
    kind="View",
    plural="views",
    short_names=("kview",),
    spec=ViewSpec,
    status=ViewStatus,
    description="Rows computed from entity state or runs, with named read-only SQL queries.",
    printer_columns=(
        PrinterColumn("Phase", ".status.phase"),
        PrinterColumn("Rows", ".status.rows", "integer", "Rows in the operator's copy"),
        PrinterColumn("Offset", ".status.offset", "integer", "The stream offset applied"),
        PrinterColumn("Lag", ".status.lag", "integer", "Stream items not yet applied"),
        PrinterColumn("Message", ".status.message", priority=1),
        AGE,
    ),
)

KINDS: tuple[ResourceKind, ...] = (
    WORKFLOW,
    WORKFLOW_TEMPLATE,
    ENTITY_TYPE,
    ENTITY,
    SCHEDULE,
    TOPIC,
    CONSUMER,
    VIEW,
)
