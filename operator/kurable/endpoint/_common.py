"""What every route needs: the Backend, the caller's identity, the access check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ._access import Access
from ._auth import Identity
from ._backend import Backend

_bearer = HTTPBearer(auto_error=False, description="A token the API server accepts")


async def backend(request: Request) -> Backend:
    # async: FastAPI runs a plain `def` dependency on a worker thread, a hop per request.
    found: Backend = request.app.state.backend
    return found


Server = Annotated[Backend, Depends(backend)]


async def caller(
    request: Request,
    server: Server,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    """The request's identity (TokenReview); 401 without a usable token."""
    return await server.gate.authenticate(request.headers.get("authorization"))


Caller = Annotated[Identity, Depends(caller)]


async def allow(server: Backend, identity: Identity, access: Access) -> None:
    """403 unless the API server says `identity` may do `access`."""
    await server.gate.authorize(identity, access)
