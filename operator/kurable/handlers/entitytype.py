"""EntityType bindings: validation, and deletion that waits for the type's Entities.

Deleting an EntityType that Entities still use is *blocked*, not refused: the API
server cannot ask who uses a type at admission time, so kopf's finalizer keeps the
EntityType (still usable) while Entities of that type exist in its namespace, and
status (phase Terminating, condition Ready=False reason InUse) plus an Info Event
(reason DeletionBlocked) say which Entities to delete first. When the last one goes,
the EntityType goes. That wait is expected, not a failure (`operator.ExpectedWait`):
no ERROR line.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
from pydantic import ValidationError

from kurable.api.v1alpha1 import ENTITY, ENTITY_TYPE, GROUP, VERSION, EntityTypeSpec
from kurable.engine import entities as engine
from kurable.engine.conditions import updated_condition
from kurable.engine.journal import now_rfc3339
from kurable.engine.messages import counted
from kurable.engine.validate import model_problems
from kurable.executor.runtime import Runtime
from kurable.store import entities as store
from kurable.store.entities import EntityRef

from .operator import ExpectedWait, OperatorMemo

IN_USE_RETRY_SECONDS = 10.0
"""How often a blocked EntityType deletion checks whether its Entities are gone."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.resume(GROUP, VERSION, ENTITY_TYPE.plural)
@kopf.on.create(GROUP, VERSION, ENTITY_TYPE.plural)
@kopf.on.update(GROUP, VERSION, ENTITY_TYPE.plural, field="spec")
async def validate(
    body: kopf.Body, namespace: str | None, name: str, memo: OperatorMemo, logger: Logger, **_: Any
) -> None:
    """Check the definition and the existing entities' states against it; report in status."""
    runtime = memo.executor.runtime
    assert namespace is not None, "EntityTypes are namespaced"
    status = dict(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation")
    now = now_rfc3339()
    try:
        entity_type: EntityTypeSpec | None = EntityTypeSpec.model_validate(body.get("spec") or {})
        problems = engine.definition_problems(entity_type) if entity_type else []
    except ValidationError as e:
        entity_type, problems = None, [str(p) for p in model_problems(e, "spec")]
    previous = status.get("conditions")
    if problems:
        message = "; ".join(problems[:5])
        patch = {
            "phase": "Invalid",
            "message": message,
            "observedGeneration": generation,
            "conditions": [
                updated_condition(
                    "Ready", "False", "Invalid", message, generation, previous, now
                ).to_status()
            ],
        }
        await runtime.patch_status(ENTITY_TYPE, namespace, name, patch)
        kopf.warn(body, reason="Invalid", message=message)
        return
    assert entity_type is not None
    misfits = await _misfits(runtime, namespace, name, entity_type)
    conditions = [
        updated_condition("Ready", "True", "Valid", "", generation, previous, now).to_status()
    ]
    if misfits:
        text = "; ".join(f"{entity}: {problem}" for entity, problem in misfits[:10])
        message = f"{len(misfits)} Entities no longer fit the stateSchema: {text}"
        conditions.append(
            updated_condition(
                "EntitiesConform",
                "False",
                "StateSchemaMismatch",
                message,
                generation,
                previous,
                now,
            ).to_status()
        )
        kopf.warn(body, reason="StateSchemaMismatch", message=message)
    else:
        conditions.append(
            updated_condition(
                "EntitiesConform", "True", "AllFit", "", generation, previous, now
            ).to_status()
        )
    await runtime.patch_status(
        ENTITY_TYPE,
        namespace,
        name,
        {
            "phase": "Valid",
            "message": message if misfits else None,
            "observedGeneration": generation,
            "conditions": conditions,
        },
    )
    if status.get("phase") != "Valid":
        kopf.info(body, reason="Valid", message=counted(len(entity_type.commands), "command"))


@kopf.on.delete(GROUP, VERSION, ENTITY_TYPE.plural)
async def block_deletion_in_use(
    body: kopf.Body, namespace: str | None, name: str, memo: OperatorMemo, **_: Any
) -> None:
    """Keep an EntityType while Entities of that type exist in its namespace (see module doc)."""
    runtime = memo.executor.runtime
    assert namespace is not None
    users = [
        e["metadata"]["name"]
        for e in await runtime.list_objects(ENTITY, namespace)
        if (e.get("spec") or {}).get("type") == name and not e["metadata"].get("deletionTimestamp")
    ]
    if not users:
        return
    shown = ", ".join(sorted(users)[:10]) + (" ..." if len(users) > 10 else "")
    message = (
        f"deletion blocked: {len(users)} Entities of this type exist ({shown}); "
        "delete them first and this EntityType goes"
    )
    status = dict(body.get("status") or {})
    if status.get("message") != message:
        generation = body.get("metadata", {}).get("generation")
        await runtime.patch_status(
            ENTITY_TYPE,
            namespace,
            name,
            {
                "phase": "Terminating",
                "message": message,
                "conditions": [
                    updated_condition(
                        "Ready",
                        "False",
                        "InUse",
                        message,
                        generation,
                        status.get("conditions"),
                        now_rfc3339(),
                    ).to_status()
                ],
            },
        )
        kopf.info(body, reason="DeletionBlocked", message=message)
    raise ExpectedWait(message, delay=IN_USE_RETRY_SECONDS)


async def _misfits(
    runtime: Runtime, namespace: str, type_name: str, entity_type: EntityTypeSpec
) -> list[tuple[str, str]]:
    """(entity name, first problem) of each Entity of this type whose state does not fit."""
    found = []
    for obj in await runtime.list_objects(ENTITY, namespace):
        if (obj.get("spec") or {}).get("type") != type_name:
            continue
        snapshot = await store.load_snapshot(
            runtime.etcd, runtime.prefix, EntityRef.from_object(obj)
        )
        if snapshot is None:
            continue
        problems = engine.state_problems(entity_type, snapshot.state)
        if problems:
            found.append((obj["metadata"]["name"], problems[0]))
            kopf.warn(
                cast(kopf.Body, obj),
                reason="StateSchemaMismatch",
                message=f"state no longer fits EntityType {type_name}: {'; '.join(problems)}",
            )
    return found
