"""Entity bindings: initial state, status mirror, clean deletion.

Commands are executed by whoever sends them (client, CLI, workflow step) through
kurable.executor.commands, which projects the new state into status. The operator
creates an entity's state at creation, repairs status that fell behind (a sender that
died between its commit and its status patch) and removes an entity's etcd data on
deletion. The EntityType's bindings are in `entitytype.py`.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf
from pydantic import ValidationError

from kurable.api.v1alpha1 import ENTITY, ENTITY_TYPE, GROUP, VERSION, EntityTypeSpec
from kurable.engine import entities as engine
from kurable.engine.conditions import updated_condition
from kurable.engine.entities import CommandRejected
from kurable.engine.journal import now_rfc3339
from kurable.engine.messages import counted
from kurable.engine.validate import model_problems
from kurable.executor.commands import project_entity_status
from kurable.executor.runtime import Runtime
from kurable.store import entities as store
from kurable.store.entities import EntityRef

from .operator import ExpectedWait, OperatorMemo

TYPE_RETRY_SECONDS = 5.0
"""How often an Entity whose EntityType is missing looks for it again."""
RESYNC_SECONDS = 30.0
"""How often the operator checks that an Entity's status shows its etcd version."""
RESYNC_FIRST_SECONDS = 5.0
"""The first check after the operator starts: a sender that died (the operator's last
incarnation) may have committed a command without patching status."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


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
            raise ExpectedWait(
                f"EntityType {ref.type} not found in namespace {namespace} (for Entity {name})",
                delay=TYPE_RETRY_SECONDS,
            )
        try:
            entity_type = EntityTypeSpec.model_validate(type_obj.get("spec") or {})
            state = engine.initial_state(entity_type, ref.initial_state)
        except ValidationError as e:
            message = f"EntityType {ref.type} is invalid: {model_problems(e, 'spec')[0]}"
            await _entity_invalid(runtime, body, "TypeInvalid", message)
            raise ExpectedWait(message, delay=TYPE_RETRY_SECONDS) from None
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
    logger.info(f"removed the entity's etcd data ({counted(deleted, 'key')})")


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
