"""The `entity` step: send a command to an Entity, exactly once, and take its reply."""

from __future__ import annotations

from typing import Any

from kurable.api.v1alpha1 import ENTITY, ENTITY_TYPE
from kurable.engine import expressions
from kurable.engine.decide import Act, StepError
from kurable.engine.entities import CommandConflict, CommandRejected

from ..commands import (
    EntityBusy,
    HandlerUnavailable,
    execute_command,
    http_handler,
    status_projector,
)
from ..runtime import Runtime
from .outcome import Outcome, RunRef


async def perform(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    """Send a command exactly once: its id is the step's idempotency key, so a step
    executed again after a crash gets the original reply and changes nothing."""
    spec = act.step.entity
    assert spec is not None
    where = f"{act.step.name}.entity"
    name = expressions.render(spec.name, context, f"{where}.name")
    entity = await runtime.get(ENTITY, run.namespace, str(name))
    if entity is None:
        return None, StepError(
            "EntityNotFound", f"{where}: Entity {name!r} not found in namespace {run.namespace}"
        )
    type_name = (entity.get("spec") or {}).get("type", "")
    entity_type = await runtime.get(ENTITY_TYPE, run.namespace, type_name)
    if entity_type is None:
        return None, StepError(
            "EntityTypeNotFound", f"{where}: EntityType {type_name!r} of Entity {name!r} not found"
        )
    command_input = expressions.render(spec.input, context, f"{where}.input")
    try:
        result = await execute_command(
            runtime.etcd,
            runtime.prefix,
            entity,
            entity_type,
            spec.command,
            command_input,
            act.idempotency_key(run.uid),
            on_committed=status_projector(runtime.api, known=entity),
            ask=http_handler(runtime.http),
            max_value_bytes=runtime.settings.max_value_bytes,
        )
    except HandlerUnavailable as e:
        return None, StepError("Unavailable", f"{name}.{spec.command}: {e}")
    except CommandRejected as e:
        return None, StepError("CommandRejected", f"{name}.{spec.command}: {e}", retryable=False)
    except CommandConflict as e:
        return None, StepError("CommandConflict", f"{name}.{spec.command}: {e}", retryable=False)
    except EntityBusy as e:
        return None, StepError("Unavailable", f"{name}.{spec.command}: {e}")
    return result.reply, None
