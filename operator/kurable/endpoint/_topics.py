"""Topic routes: publish a message (exactly once per Idempotency-Key)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Response

from kurable.api.v1alpha1 import TOPIC
from kurable.executor.topics import (
    InvalidMessage,
    MessageConflict,
    TopicNotFound,
    publish_message,
)

from . import _access as access
from ._backend import outage
from ._common import Caller, Server, allow
from ._models import PublishReply, PublishRequest
from ._problems import Problem

router = APIRouter(prefix="/v1/namespaces/{namespace}/topics", tags=["topics"])


@router.post(
    "/{topic}/messages",
    response_model=PublishReply,
    status_code=201,
    responses={
        200: {"description": "the Idempotency-Key was published before: nothing new"},
        404: {"description": "no such Topic"},
        409: {"description": "the Idempotency-Key was used for another key or data"},
        422: {"description": "the data does not fit the Topic's messageSchema"},
    },
)
async def publish(
    namespace: str,
    topic: str,
    body: PublishRequest,
    identity: Caller,
    server: Server,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(description="The message id: a resend with the same id publishes once"),
    ] = None,
) -> PublishReply:
    """Append a message to the Topic; its id is the Idempotency-Key (else a new uuid)."""
    await allow(server, identity, access.publish(namespace, topic))
    obj = await server.get_object(TOPIC.plural, namespace, topic)
    message_id = idempotency_key or f"endpoint/{uuid.uuid4()}"
    try:
        with outage():
            published = await publish_message(
                server.etcd,
                server.prefix,
                obj,
                namespace=namespace,
                name=topic,
                id=message_id,
                key=body.key or "",
                data=body.data,
                type=body.type or "",
                source=f"/namespaces/{namespace}/topics/{topic}",
            )
    except TopicNotFound as e:
        raise Problem(404, "not-found", f"{e}; create it first (kubectl apply a Topic)") from None
    except InvalidMessage as e:
        errors = [_error(problem) for problem in e.problems]
        raise Problem(
            422, "invalid-request", f"{e.problems[0]} (messageSchema)", errors=errors
        ) from None
    except MessageConflict as e:
        raise Problem(409, "conflict", str(e)) from None
    if published.duplicate:
        response.status_code = 200
    return PublishReply(id=published.id, offset=published.offset, duplicate=published.duplicate)


def _error(problem: str) -> dict[str, str]:
    """A schema problem (`data.items[0]: ...`) as a JSON Pointer into the body."""
    path, _, detail = problem.partition(": ")
    parts = path.replace("[", ".").replace("]", "").split(".")
    return {"pointer": "/" + "/".join(p for p in parts if p), "detail": detail or problem}
