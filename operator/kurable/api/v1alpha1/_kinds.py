"""The kinds of v1alpha1: names, short names, printer columns, spec and status models."""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from ._base import GROUP, VERSION
from .entity import EntitySpec, EntityStatus
from .entitytype import EntityTypeSpec, EntityTypeStatus
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
    short_names=("wf", "kwf"),
    spec=WorkflowSpec,
    status=WorkflowStatus,
    description="One run of a durable process: its steps are journaled in etcd as they commit.",
    printer_columns=(
        PrinterColumn("Phase", ".status.phase", description="Where the run is"),
        PrinterColumn("Step", ".status.currentStep", description="The step being run"),
        PrinterColumn("Attempts", ".status.attempts", "integer", "Attempts of the step"),
        PrinterColumn("Done", ".status.stepsCompleted", "integer", "Steps finished", priority=0),
        PrinterColumn("Message", ".status.message", priority=1),
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

KINDS: tuple[ResourceKind, ...] = (WORKFLOW, WORKFLOW_TEMPLATE, ENTITY_TYPE, ENTITY)
