"""The web console at `/ui/`: a static page (HTML, CSS, plain JavaScript; no build step)
that calls the endpoint's own API with the user's bearer token, so authentication and
RBAC are the API's: a user sees and may press only what their Roles allow.

Besides the `/v1` API, the page reads a few views made for it, under `/ui/api/`:

| route                                                   | access                      |
|---------------------------------------------------------|-----------------------------|
| GET /ui/api/namespaces/{ns}/workflows/{name}/graph      | get workflows               |
| GET /ui/api/namespaces/{ns}/workflows/{name}/access     | get workflows (then asks)   |
| GET /ui/api/namespaces/{ns}/schedules/{name}            | get schedules               |
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError

from kurable.api.v1alpha1 import (
    SCHEDULE,
    WORKFLOW,
    WORKFLOW_TEMPLATE,
    WorkflowSpec,
    WorkflowTemplateSpec,
)
from kurable.engine import graph as diagrams
from kurable.engine.journal import fold
from kurable.store.journal import Journal

from . import _access as access
from ._backend import Backend, outage
from ._common import Caller, Server, allow
from ._problems import Problem

STATIC = Path(__file__).parent / "console"
"""The page's files (index.html, console.js, console.css), served as they are."""

router = APIRouter(prefix="/ui/api/namespaces/{namespace}", tags=["console"])


async def _object(server: Backend, plural: str, kind: str, namespace: str, name: str) -> Any:
    obj = await server.get_object(plural, namespace, name)
    if obj is None:
        raise Problem(404, "not-found", f'{kind} "{name}" does not exist in namespace {namespace}')
    return obj


@router.get("/workflows/{name}/graph")
async def run_graph(namespace: str, name: str, identity: Caller, server: Server) -> dict[str, Any]:
    """The run's diagram (kurable.engine.graph): its pinned definition with each step's
    phase from the journal; before it starts, its spec's (or template's) definition."""
    await allow(server, identity, access.read_run(namespace, name))
    obj = await _object(server, WORKFLOW.plural, "Workflow", namespace, name)
    with outage():
        records, _ = await Journal(server.etcd, server.prefix).load(obj["metadata"]["uid"])
    state = fold(records)
    if state.spec is not None:
        return diagrams.graph(state.spec, state).to_json()
    definition = await _definition(server, namespace, obj.get("spec") or {})
    return diagrams.graph_with_phases(definition, {}, state.phase).to_json()


async def _definition(server: Backend, namespace: str, spec: dict[str, Any]) -> WorkflowSpec:
    try:
        definition = WorkflowSpec.model_validate(spec)
        ref = definition.template_ref
        if ref is None:
            return definition
        try:
            template = await server.get_object(WORKFLOW_TEMPLATE.plural, namespace, ref.name)
        except Exception:  # not readable by the endpoint: draw what the run itself says
            template = None
        if template is None:
            return definition
        steps = WorkflowTemplateSpec.model_validate(template.get("spec") or {}).steps
        return definition.model_copy(update={"steps": steps, "template_ref": None})
    except ValidationError as e:
        raise Problem(422, "invalid-request", f"the run's definition is invalid: {e}") from None


@router.get("/workflows/{name}/access")
async def run_access(
    namespace: str, name: str, identity: Caller, server: Server
) -> dict[str, bool]:
    """What the caller may do to the run: {signal, control} (control: suspend, resume,
    cancel), so the page offers only those buttons (the API checks again on each)."""
    await allow(server, identity, access.read_run(namespace, name))
    answers = {}
    for key, asked in (
        ("signal", access.signal_run(namespace, name)),
        ("control", access.control_run(namespace, name)),
    ):
        try:
            await allow(server, identity, asked)
            answers[key] = True
        except Problem as e:
            if e.status != 403:
                raise
            answers[key] = False
    return answers


@router.get("/schedules/{name}")
async def schedule(namespace: str, name: str, identity: Caller, server: Server) -> dict[str, Any]:
    """A Schedule: {name, namespace, spec, status}."""
    await allow(server, identity, access.read_schedule(namespace, name))
    obj = await _object(server, SCHEDULE.plural, "Schedule", namespace, name)
    return {
        "namespace": namespace,
        "name": name,
        "spec": obj.get("spec") or {},
        "status": obj.get("status") or {},
    }


def mount(app: FastAPI) -> None:
    """Serve the console at /ui/ and its views at /ui/api/."""
    app.include_router(router)

    @app.get("/ui", include_in_schema=False)
    async def ui_root() -> RedirectResponse:
        return RedirectResponse("/ui/")

    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="console")
