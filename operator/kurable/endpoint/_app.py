"""The ASGI application: routes, problem+json errors, the body limit, health and readiness."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from kubernetes_asyncio import client as k8s
from starlette.exceptions import HTTPException

from kurable.executor.errors import describe_error

from ._auth import API_ERRORS, RETRY_AFTER_SECONDS
from ._backend import ETCD_ERRORS, Backend, open_backend
from ._limits import BodyLimit
from ._metrics import RequestMetrics, exposition
from ._problems import PROBLEM_JSON, Problem, invalid, malformed_json
from ._settings import EndpointSettings

API_DOWN: tuple[type[BaseException], ...] = (*API_ERRORS, k8s.ApiException)
log = logging.getLogger(__name__)

BackendFactory = Callable[[EndpointSettings], Awaitable[Backend]]

HTTP_KINDS = {
    404: "not-found",
    405: "method-not-allowed",
    415: "unsupported-media-type",
}


def problem_response(problem: Problem, request: Request) -> Response:
    return Response(
        problem.encode(request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_JSON,
        headers=problem.headers,
    )


def create_app(
    settings: EndpointSettings, backend_factory: BackendFactory = open_backend
) -> RequestMetrics:
    """The endpoint as an ASGI application (FastAPI behind the body limit, every request
    counted)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = await backend_factory(settings)
        app.state.backend = backend
        try:
            yield
        finally:
            await backend.close()

    from . import _console, _entities, _schedules, _topics, _views, _workflows

    app = FastAPI(
        title="Kurable endpoint",
        version="v1",
        description="Start, read, signal and control workflow runs; send commands to "
        "entities and read them; trigger and backfill schedules; query views. Authenticated by "
        "Kubernetes bearer tokens (TokenReview) and authorised per request by Kubernetes "
        "RBAC (SubjectAccessReview) on kurable.dev resources. Errors are RFC 9457 problem details.",
        lifespan=lifespan,
    )

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> Response:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        for error in errors:
            if error.get("type") == "json_invalid":
                return problem_response(_decode_problem(getattr(exc, "body", None)), request)
        return problem_response(invalid(errors), request)

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, exc: HTTPException) -> Response:
        kind = HTTP_KINDS.get(exc.status_code, "http-error")
        detail = str(exc.detail)
        if exc.status_code == 404:
            detail = f"no route {request.method} {request.url.path}; see /docs"
        return problem_response(
            Problem(exc.status_code, kind, detail, headers=exc.headers), request
        )

    @app.exception_handler(Exception)
    async def on_error(request: Request, exc: Exception) -> Response:
        # A bug, or the endpoint's own ServiceAccount refused: the caller cannot fix it.
        log.exception("%s %s failed", request.method, request.url.path)
        detail = describe_error(exc)
        return problem_response(
            Problem(500, "internal-error", f"the endpoint failed: {detail}"), request
        )

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process serves requests."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics (text format), unauthenticated like the probes."""
        body, content_type = exposition()
        return Response(body, media_type=content_type)

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    async def readyz(request: Request) -> Response:
        """Readiness: the API server and etcd both answer."""
        backend: Backend = request.app.state.backend
        checks: dict[str, str] = {}
        try:
            await k8s.VersionApi(backend.api).get_code()
            checks["apiServer"] = "ok"
        except API_DOWN as e:
            checks["apiServer"] = f"{type(e).__name__}: {e}".strip()[:200]
        try:
            await backend.etcd.status()
            checks["etcd"] = "ok"
        except (*ETCD_ERRORS, *API_ERRORS) as e:
            checks["etcd"] = f"{type(e).__name__}: {e}".strip()[:200]
        failing = [name for name, state in checks.items() if state != "ok"]
        if failing:
            problem = Problem(
                503,
                "unavailable",
                f"not ready: {', '.join(failing)} not answering",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                extra={"checks": checks},
            )
            return problem_response(problem, request)
        return JSONResponse({"status": "ok", "checks": checks})

    app.include_router(_entities.router)
    app.include_router(_workflows.router)
    app.include_router(_schedules.router)
    app.include_router(_topics.router)
    app.include_router(_views.router)
    _console.mount(app)
    return RequestMetrics(BodyLimit(app, settings.max_body_bytes))


def _decode_problem(body: Any) -> Problem:
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    if isinstance(text, str):
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            return malformed_json(e)
    return Problem(400, "malformed-json", "the body is not JSON; send a JSON document")
