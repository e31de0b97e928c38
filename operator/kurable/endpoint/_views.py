"""View routes: run a View's named query against this process's own copy of its rows.

`GET /v1/namespaces/{ns}/views/{view}/queries/{query}?min=10&limit=5` -- every query-string
parameter is one of the query's parameters, except `continue` (the token of the next
page) and `minOffset` (read-your-writes: an entity command's `offset`; the answer waits,
bounded, until the View has applied it). The endpoint materializes each View it is asked
about under its state directory (kurable.executor.views) and keeps it current from then on.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from kurable.api.v1alpha1 import VIEW
from kurable.engine.views import RESERVED_PARAMS, ViewError
from kurable.executor.views import ViewUnavailable, verdict

from . import _access as access
from ._auth import RETRY_AFTER_SECONDS
from ._backend import outage
from ._common import Caller, Server, allow
from ._models import Page
from ._problems import Problem

router = APIRouter(prefix="/v1/namespaces/{namespace}/views", tags=["views"])


@router.get(
    "/{view}/queries/{query}",
    response_model=Page,
    response_model_by_alias=True,
    responses={
        400: {"description": "a parameter is missing, unknown or out of range"},
        404: {"description": "no such View or query"},
        409: {"description": "the View is Invalid"},
        503: {"description": "the View is still being built, or behind minOffset"},
    },
)
async def query_view(
    namespace: str,
    view: str,
    query: str,
    request: Request,
    identity: Caller,
    server: Server,
    continue_: Annotated[
        str | None, Query(alias="continue", description="the token of the previous page")
    ] = None,
    min_offset: Annotated[
        int, Query(alias="minOffset", ge=0, description="wait until this offset is applied")
    ] = 0,
) -> Page:
    """One page of the View's query: `items` are the rows, `continue` the next page's token."""
    await allow(server, identity, access.read_view(namespace, view))
    obj = await server.get_object(VIEW.plural, namespace, view)
    if obj is None:
        raise Problem(404, "not-found", f'View "{view}" does not exist in namespace {namespace}')
    plan, problems = verdict(namespace, view, obj.get("spec") or {})
    if problems:
        first = problems[0]
        raise Problem(
            409,
            "invalid-view",
            f"View {view} is Invalid: {first}",
            errors=[{"pointer": "", "field": p.path, "detail": p.message} for p in problems],
        )
    if query not in plan.queries:
        shown = ", ".join(sorted(plan.queries))
        raise Problem(404, "not-found", f"View {view} has no query {query!r} (it has {shown})")
    params = {k: v for k, v in request.query_params.items() if k not in RESERVED_PARAMS}
    skip = _skip(continue_)
    views = server.views
    try:
        with outage():
            page = await views.query(
                plan,
                query,
                params,
                skip=skip,
                cap=server.settings.view_row_cap,
                min_offset=min_offset,
            )
    except ViewError as e:
        raise Problem(
            400,
            "invalid-params",
            str(e),
            errors=[{"pointer": "", "field": e.path, "detail": e.message}],
        ) from None
    except ViewUnavailable as e:
        raise Problem(
            503, "unavailable", str(e), headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        ) from None
    token = str(skip + len(page.rows)) if page.more else None
    return Page(items=page.rows, continue_=token)


def _skip(token: str | None) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise Problem(
            400, "invalid-request", f"continue={token!r} is not a token this endpoint gave"
        )
    return int(token)
