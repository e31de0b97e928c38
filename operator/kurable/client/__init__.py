"""Kurable from Python: send commands to Entities and read them.

`Client` blocks (scripts, the CLI); `AsyncClient` is the same on asyncio.
A rejected command raises `CommandRejected` (its `reason` and `message` say which
rule refused it); nothing changed. A command id seen before returns the original
reply and changes nothing; reused for another command or input, it raises
`CommandConflict` (nothing applied).
"""

from kurable.client._entities import AsyncClient, Client, EntityNotFound
from kurable.engine.entities import CommandConflict, CommandRejected, Snapshot
from kurable.executor.commands import (
    CommandResult,
    EntityBusy,
    HandlerUnavailable,
    http_handler,
    project_entity_status,
    status_projector,
)
from kurable.store.entities import EntityRef

__all__ = [
    "AsyncClient",
    "Client",
    "CommandConflict",
    "CommandRejected",
    "CommandResult",
    "EntityBusy",
    "EntityNotFound",
    "EntityRef",
    "HandlerUnavailable",
    "Snapshot",
    "http_handler",
    "project_entity_status",
    "status_projector",
]
