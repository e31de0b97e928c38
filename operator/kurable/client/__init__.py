"""Kurable from Python: an HTTP client of the endpoint (`kurable endpoint`).

`Client` blocks (scripts, the CLI); `AsyncClient` is the same on asyncio. Both find the
endpoint in the `endpoint` argument or `$KURABLE_ENDPOINT`, and their bearer token in the
`token` argument, `$KURABLE_TOKEN` or the kubeconfig's current user (a static token, a
tokenFile or an exec credential plugin, as kubectl). Kubernetes RBAC decides at the
endpoint what the caller may do; nothing here opens etcd.

Error answers (RFC 9457 problem details) raise typed exceptions: a rejected command
raises `CommandRejected` (its `reason` and `message` say which rule refused it; nothing
changed); a command id seen before returns the original reply and changes nothing;
reused for another command or input, it raises `CommandConflict` (nothing applied);
`Forbidden`, `NotFound`, `Unauthenticated`, `InvalidRequest`, `Unavailable` (with
`retry_after`) for the rest.
"""

from kurable.client._client import (
    AsyncClient,
    Call,
    Client,
    CommandReply,
    EntityState,
    Event,
    namespaced,
)
from kurable.client._credentials import ENDPOINT_ENV, TOKEN_ENV, Kubeconfig, TokenSource
from kurable.client._errors import (
    BodyTooLarge,
    ClientError,
    CommandConflict,
    CommandRejected,
    Conflict,
    EndpointError,
    EntityBusy,
    EntityNotFound,
    Forbidden,
    InvalidRequest,
    NotFound,
    Unauthenticated,
    Unavailable,
    problem_error,
)
from kurable.client._views import QueryFailed, query_view

__all__ = [
    "ENDPOINT_ENV",
    "TOKEN_ENV",
    "AsyncClient",
    "BodyTooLarge",
    "Call",
    "Client",
    "ClientError",
    "CommandConflict",
    "CommandRejected",
    "CommandReply",
    "Conflict",
    "EndpointError",
    "EntityBusy",
    "EntityNotFound",
    "EntityState",
    "Event",
    "Forbidden",
    "InvalidRequest",
    "Kubeconfig",
    "NotFound",
    "QueryFailed",
    "TokenSource",
    "Unauthenticated",
    "Unavailable",
    "namespaced",
    "problem_error",
    "query_view",
]
