"""Entity routes: send a command (the one command path, `execute_command`), read state
and the event log."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query

from kurable.api.v1alpha1 import ENTITY, ENTITY_TYPE
from kurable.executor.commands import (
    CommandConflict,
    CommandRejected,
    EntityBusy,
    HandlerUnavailable,
    execute_command,
    http_handler,
    status_projector,
)
from kurable.store import entities as store
from kurable.store.entities import EntityRef

from . import _access as access
from ._auth import RETRY_AFTER_SECONDS
from ._backend import Backend, outage
from ._common import Caller, Server, allow
from ._models import CommandReply, CommandRequest, EntityState, Page
from ._problems import Problem

router = APIRouter(prefix="/v1/namespaces/{namespace}/entities", tags=["entities"])

MAX_PAGE = 1000
"""The most items one page holds."""


async def _entity(server: Backend, namespace: str, name: str) -> dict[str, Any]:
    obj = await server.get_object(ENTITY.plural, namespace, name)
    if obj is None or obj["metadata"].get("deletionTimestamp"):
        raise Problem(
            404,
            "not-found",
            f'Entity "{name}" does not exist in namespace {namespace} (or is being deleted); '
            "create it first (kubectl apply an Entity)",
        )
    return obj


@router.post(
    "/{name}/commands/{command}",
    response_model=CommandReply,
    responses={
        404: {"description": "no such Entity or EntityType"},
        409: {"description": "the Idempotency-Key was used for another command or input"},
        422: {"description": "rejected by a guard or the command's schema"},
    },
)
async def send_command(
    namespace: str,
    name: str,
    command: str,
    body: CommandRequest,
    identity: Caller,
    server: Server,
    idempotency_key: Annotated[
        str | None,
        Header(description="The command id: a resend with the same id applies once"),
    ] = None,
) -> CommandReply:
    """Apply `command` to the Entity exactly once per Idempotency-Key; reply and version."""
    await allow(server, identity, access.command_entity(namespace, name))
    obj = await _entity(server, namespace, name)
    ref = EntityRef.from_object(obj)
    entity_type = await server.get_object(ENTITY_TYPE.plural, namespace, ref.type)
    if entity_type is None:
        raise Problem(
            404,
            "not-found",
            f'EntityType "{ref.type}" of Entity "{name}" does not exist in namespace '
            f"{namespace}; create it first",
        )
    command_id = idempotency_key or f"endpoint/{uuid.uuid4()}"
    try:
        with outage():
            result = await execute_command(
                server.etcd,
                server.prefix,
                ref,
                entity_type,
                command,
                body.input,
                command_id,
                on_committed=status_projector(server.api, known=obj),
                ask=http_handler(server.session),
                max_value_bytes=server.settings.max_value_bytes,
            )
    except CommandRejected as e:
        raise Problem(
            422,
            "command-rejected",
            e.message,
            extra={"reason": e.reason},
        ) from None
    except CommandConflict as e:
        raise Problem(409, "conflict", e.message, extra={"differs": list(e.differs)}) from None
    except (EntityBusy, HandlerUnavailable) as e:
        raise Problem(
            503,
            "busy" if isinstance(e, EntityBusy) else "unavailable",
            f"{e}; send it again with the same Idempotency-Key",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    except ValueError as e:
        raise Problem(400, "invalid-request", f"Idempotency-Key: {e}") from None
    return CommandReply(
        reply=result.reply,
        version=result.version,
        duplicate=result.duplicate,
        offset=result.offset,
    )


@router.get("/{name}", response_model=EntityState, response_model_by_alias=True)
async def get_entity(namespace: str, name: str, identity: Caller, server: Server) -> EntityState:
    """The Entity's current state and version (from etcd, never shortened)."""
    await allow(server, identity, access.read_entity(namespace, name))
    ref = EntityRef.from_object(await _entity(server, namespace, name))
    with outage():
        snapshot = await store.load_snapshot(server.etcd, server.prefix, ref)
    if snapshot is None:
        return EntityState(
            namespace=namespace, name=name, type=ref.type, state=ref.initial_state or {}, version=0
        )
    return EntityState(
        namespace=namespace,
        name=name,
        type=ref.type,
        state=snapshot.state,
        version=snapshot.version,
        last_event=snapshot.last_event,
    )


@router.get("/{name}/events", response_model=Page, response_model_by_alias=True)
async def entity_events(
    namespace: str,
    name: str,
    identity: Caller,
    server: Server,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    continue_: Annotated[
        str | None, Query(alias="continue", description="the token of the previous page")
    ] = None,
) -> Page:
    """The Entity's event log, oldest first: `{type, data, commandId, at, version}` each."""
    await allow(server, identity, access.read_entity(namespace, name))
    ref = EntityRef.from_object(await _entity(server, namespace, name))
    after = _after(continue_)
    with outage():
        events = await store.load_events_page(server.etcd, server.prefix, ref, after, limit + 1)
    more = len(events) > limit
    events = events[:limit]
    token = str(events[-1]["version"]) if more and events else None
    return Page(items=events, continue_=token)


def _after(token: str | None) -> int:
    if token is None or token == "":
        return 0
    if not token.isdigit():
        raise Problem(
            400, "invalid-request", f"continue={token!r} is not a token this endpoint gave"
        )
    return int(token)
