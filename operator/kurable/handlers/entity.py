"""Entity and EntityType handlers: initial state, status mirror, validation, clean deletion.

Commands are executed by whoever sends them (client, CLI, workflow step) through
kurable.executor.commands, which projects the new state into status. The operator
creates an entity's state at creation, repairs status that fell behind (a sender that
died between its commit and its status patch) and removes an entity's etcd data on
deletion.

Deleting an EntityType that Entities still use is *blocked*, not refused: the API
server cannot ask who uses a type at admission time, so kopf's finalizer keeps the
EntityType (still usable) while Entities of that type exist in its namespace, and
status (phase Terminating, condition Ready=False reason InUse) plus a Warning Event
say which Entities to delete first. When the last one goes, the EntityType goes.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
from pydantic import ValidationError

from kurable.api.v1alpha1 import ENTITY, ENTITY_TYPE, GROUP, VERSION, EntityTypeSpec
from kurable.engine import entities as engine
from kurable.engine.conditions import updated_condition
from kurable.engine.entities import CommandRejected
from kurable.engine.journal import now_rfc3339
from kurable.executor.commands import project_entity_status
from kurable.executor.runtime import Runtime
from kurable.store import entities as store
from kurable.store.entities import EntityRef

from .operator import OperatorMemo

TYPE_RETRY_SECONDS = 5.0
"""How often an Entity whose EntityType is missing looks for it again."""
IN_USE_RETRY_SECONDS = 10.0
"""How often a blocked EntityType deletion checks whether its Entities are gone."""
RESYNC_SECONDS = 30.0
"""How often the operator checks that an Entity's status shows its etcd version."""
RESYNC_FIRST_SECONDS = 5.0
"""The first check after the operator starts: a sender that died (the operator's last
incarnation) may have committed a command without patching status."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


# ---------------------------------------------------------------------------- Entity


@kopf.on.resume(GROUP, VERSION, ENTITY.plural)
@kopf.on.create(GROUP, VERSION, ENTITY.plural)
@kopf.on.update(GROUP, VERSION, ENTITY.plural, field="spec")
async def initialize(
    body: kopf.Body, namespace: str | None, name: str, memo: OperatorMemo, logger: Logger, **_: Any
) -> None:
    """Create the entity's state from `initialState` (once) and mirror it in status."""
    runtime = memo.executor.runtime
    assert namespace is not None, "Entities are namespaced"
    ref = EntityRef.from_object(body)
    generation = body.get("metadata", {}).get("generation")
    snapshot = await store.load_snapshot(runtime.etcd, runtime.prefix, ref)
    if snapshot is None:
        type_obj = await runtime.get(ENTITY_TYPE, namespace, ref.type)
        if type_obj is None:
            await _entity_invalid(
                runtime,
                body,
                "TypeNotFound",
                f"EntityType {ref.type} not found in namespace {namespace}; create it "
                "(this Entity is retried until it exists)",
            )
            raise kopf.TemporaryError(
                f"EntityType {ref.type} not found in namespace {namespace} (for Entity {name})",
                delay=TYPE_RETRY_SECONDS,
            )
        try:
            entity_type = EntityTypeSpec.model_validate(type_obj.get("spec") or {})
            state = engine.initial_state(entity_type, ref.initial_state)
        except ValidationError as e:
            message = f"EntityType {ref.type} is invalid: {_first_error(e)}"
            await _entity_invalid(runtime, body, "TypeInvalid", message)
            raise kopf.TemporaryError(message, delay=TYPE_RETRY_SECONDS) from None
        except CommandRejected as e:
            # Permanent until the user edits spec.initialState (an update runs this again).
            await _entity_invalid(runtime, body, "InvalidInitialState", e.message)
            return
        snapshot = await store.create_entity(runtime.etcd, runtime.prefix, ref, state)
        logger.info(f"state created at version {snapshot.version}")
    status = dict(body.get("status") or {})
    if status.get("phase") == "Ready" and status.get("observedGeneration") != generation:
        # Same state, newer spec generation acknowledged.
        await runtime.patch_status(ENTITY, namespace, name, {"observedGeneration": generation})
    if status.get("phase") != "Ready":
        kopf.info(body, reason="Ready", message=f"state at version {snapshot.version}")
    await project_entity_status(runtime.api, namespace, name, snapshot)


@kopf.timer(
    GROUP, VERSION, ENTITY.plural, interval=RESYNC_SECONDS, initial_delay=RESYNC_FIRST_SECONDS
)
async def resync(
    body: kopf.Body, namespace: str | None, name: str, memo: OperatorMemo, **_: Any
) -> None:
    """Put status right when a sender committed a command but died before patching it."""
    runtime = memo.executor.runtime
    assert namespace is not None
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    snapshot = await store.load_snapshot(runtime.etcd, runtime.prefix, EntityRef.from_object(body))
    if snapshot is not None and (body.get("status") or {}).get("version") != snapshot.version:
        await project_entity_status(runtime.api, namespace, name, snapshot)


@kopf.on.delete(GROUP, VERSION, ENTITY.plural)
async def forget(body: kopf.Body, memo: OperatorMemo, logger: Logger, **_: Any) -> None:
    """Deleting an Entity removes its state, log and dedup records (the finalizer waits)."""
    runtime = memo.executor.runtime
    deleted = await store.forget_entity(runtime.etcd, runtime.prefix, EntityRef.from_object(body))
    logger.info(f"removed the entity's etcd data ({deleted} keys)")


async def _entity_invalid(runtime: Runtime, body: kopf.Body, reason: str, message: str) -> None:
    meta = body["metadata"]
    status = dict(body.get("status") or {})
    if status.get("phase") == "Invalid" and status.get("message") == message:
        return  # already said; retries do not repeat the Event
    generation = meta.get("generation")
    await runtime.patch_status(
        ENTITY,
        meta["namespace"],
        meta["name"],
        {
            "phase": "Invalid",
            "message": message,
            "observedGeneration": generation,
            "conditions": [
                updated_condition(
                    "Ready",
                    "False",
                    reason,
                    message,
                    generation,
                    status.get("conditions"),
                    now_rfc3339(),
                ).to_status()
            ],
        },
    )
    kopf.warn(body, reason=reason, message=message)


# ------------------------------------------------------------------------ EntityType


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
        entity_type, problems = None, [_first_error(e)]
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
        kopf.info(body, reason="Valid", message=f"{len(entity_type.commands)} commands")


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
        kopf.warn(body, reason="DeletionBlocked", message=message)
    raise kopf.TemporaryError(message, delay=IN_USE_RETRY_SECONDS)


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


def _first_error(error: ValidationError) -> str:
    item = error.errors()[0]
    path = "spec"
    for part in item["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{path}: {item['msg']}"
