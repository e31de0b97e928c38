"""Schedule routes: trigger (one run now) and backfill (the run of every tick in a past
range, exactly once), as `kurable schedule trigger|backfill` do.

kurable.engine.schedule_requests decides (the concurrency policy against the schedule's
active runs, the runs' names and bodies); these routes read the Schedule and its runs and
create, or cancel, what it says with the endpoint's ServiceAccount, after the caller's
SubjectAccessReview allowed `create` on `schedules/trigger`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import GROUP, SCHEDULE, VERSION, WORKFLOW, ScheduleSpec
from kurable.engine import expressions
from kurable.engine import schedule_requests as requests
from kurable.engine import schedules as ticks
from kurable.engine.validate import describe

from . import _access as access
from ._backend import Backend, outage
from ._common import Caller, Server, allow
from ._models import BackfillRequest, Run, ScheduleRuns, SkippedTick
from ._problems import Problem
from ._runs import run_view
from ._workflows import _api_problem, _patch_spec, _run_location

router = APIRouter(prefix="/v1/namespaces/{namespace}/schedules", tags=["schedules"])


async def _schedule(
    server: Backend, namespace: str, name: str
) -> tuple[dict[str, Any], ScheduleSpec, ticks.Cadence]:
    """The Schedule, its spec and cadence; 404 when it does not exist, 422 (`errors`: the
    Schedule's fields) when it cannot tick."""
    obj = await server.get_object(SCHEDULE.plural, namespace, name)
    if obj is None:
        raise Problem(
            404, "not-found", f'Schedule "{name}" does not exist in namespace {namespace}'
        )
    try:
        spec, cadence = ticks.parse(obj.get("spec") or {})
    except ticks.InvalidSchedule as e:
        raise Problem(
            422,
            "invalid-schedule",
            f'Schedule "{name}" is invalid: {describe(e.problems)}; fix the Schedule',
            errors=[{"field": p.path, "detail": p.message} for p in e.problems],
        ) from None
    return obj, spec, cadence


async def _start(
    server: Backend,
    obj: dict[str, Any],
    spec: ScheduleSpec,
    wanted: list[datetime],
    origin: requests.Origin,
) -> tuple[ScheduleRuns, list[dict[str, Any]]]:
    """Do what schedule_requests.plan says for `wanted`: the outcome, and the objects of
    the runs started."""
    meta = obj["metadata"]
    namespace = meta["namespace"]
    with outage():
        listed = await server.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            WORKFLOW.plural,
            label_selector=f"{ticks.SCHEDULE_UID_LABEL}={meta['uid']}",
        )
    try:
        planned = requests.plan(obj, spec, listed.get("items") or [], wanted, origin)
    except expressions.ExpressionError as e:
        raise Problem(
            422,
            "invalid-schedule",
            f'Schedule "{meta["name"]}" is invalid: {e}; fix the Schedule',
            errors=[{"field": "spec.input", "detail": str(e)}],
        ) from None
    outcome = ScheduleRuns()
    for run in planned.cancel:
        try:
            await _patch_spec(server, namespace, run, {"cancel": True})
        except Problem as p:
            if p.status != 404:  # finished and deleted meanwhile: nothing to cancel
                raise
        outcome.cancelled.append(run)
    created: list[dict[str, Any]] = []
    for body in planned.bodies:
        try:
            with outage():
                made = await server.custom.create_namespaced_custom_object(
                    GROUP, VERSION, namespace, WORKFLOW.plural, body
                )
        except k8s.ApiException as e:
            if e.status != 409:
                raise _api_problem(e) from None
            outcome.existing.append(body["metadata"]["name"])
            continue
        created.append(made)
        outcome.started.append(run_view(made))
    outcome.skipped = [
        SkippedTick(tick=ticks.rfc3339(tick), reason=why) for tick, why in planned.skipped
    ]
    return outcome, created


@router.post(
    "/{name}/trigger",
    status_code=201,
    response_model=Run,
    response_model_by_alias=True,
    responses={
        200: {"model": Run, "description": "a run was triggered this same second already"},
        404: {"description": "no such Schedule"},
        409: {"description": "the concurrency policy skipped the run (a run is active)"},
        422: {"description": "the Schedule is invalid"},
    },
)
async def trigger_schedule(namespace: str, name: str, identity: Caller, server: Server) -> Response:
    """Start one run of the schedule now, as its tick would (named
    `<schedule>-manual-<time>z`, labelled `kurable.dev/trigger: manual`; its concurrency
    policy applies, BufferOne as Forbid): 201 + Location."""
    await allow(server, identity, access.trigger_schedule(namespace, name))
    obj, spec, _ = await _schedule(server, namespace, name)
    now = datetime.now(UTC).replace(microsecond=0)
    outcome, created = await _start(server, obj, spec, [now], "manual")
    if outcome.skipped:
        raise Problem(
            409,
            "tick-skipped",
            f"no run started: {outcome.skipped[0].reason}; wait for the active run of "
            f'Schedule "{name}" to finish, or cancel it',
        )
    status = 201
    if created:
        run = created[0]
    else:  # triggered in this same second already: that run
        status = 200
        (existing,) = outcome.existing
        found = await server.get_object(WORKFLOW.plural, namespace, existing)
        if found is None:
            raise Problem(404, "not-found", f'run "{existing}" was deleted meanwhile; try again')
        run = found
    return JSONResponse(
        run_view(run).model_dump(mode="json", by_alias=True),
        status_code=status,
        headers={"Location": _run_location(namespace, run["metadata"]["name"])},
    )


@router.post(
    "/{name}/backfill",
    response_model=ScheduleRuns,
    response_model_by_alias=True,
    responses={
        404: {"description": "no such Schedule"},
        422: {"description": "a bad range, or the Schedule is invalid"},
    },
)
async def backfill_schedule(
    namespace: str, name: str, body: BackfillRequest, identity: Caller, server: Server
) -> ScheduleRuns:
    """Start the run of every tick in [from, to] (RFC 3339, inclusive; `to` not in the
    future; at most 1000 ticks) that has none yet, exactly once: a tick's run is named by
    the tick, so a repeat starts nothing (`existing`). The concurrency policy applies
    against the active runs (BufferOne as Forbid); skipped ticks are listed with why."""
    await allow(server, identity, access.trigger_schedule(namespace, name))
    try:
        start = requests.parse_time(body.from_, "from")
        end = requests.parse_time(body.to, "to")
        requests.check_range(start, end, datetime.now(UTC))
        obj, spec, cadence = await _schedule(server, namespace, name)
        wanted = requests.backfill_ticks(cadence, start, end, datetime.now(UTC))
    except requests.BadRange as e:
        raise Problem(
            422,
            "invalid-request",
            f"/{e.field}: {e.problem}",
            errors=[{"pointer": f"/{e.field}", "detail": e.problem}],
        ) from None
    if not wanted:
        return ScheduleRuns()
    outcome, _ = await _start(server, obj, spec, wanted, "backfill")
    return outcome
