"""The CLI for schedules: `kurable schedule trigger schedule/NAME` (one run now) and
`kurable schedule backfill schedule/NAME --from T1 --to T2` (each tick in the range).

Both act through the Kubernetes API with the caller's own credentials, as kubectl does:
they create the runs the operator would (engine.schedules.run_body: owned by the
Schedule, labelled, annotated with the tick), honouring the Schedule's concurrency
policy against its active runs (kurable.engine.schedule_requests decides, as for the
endpoint's routes). A backfilled tick's run has the tick's own name, so a backfill
repeated, or overlapping ticks the Schedule started itself, starts nothing twice.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from kurable.api.v1alpha1 import GROUP, SCHEDULE, VERSION, WORKFLOW, ScheduleSpec
from kurable.engine import expressions
from kurable.engine import schedule_requests as requests
from kurable.engine import schedules as ticks
from kurable.engine.validate import describe

from ._errors import UserError
from ._kube import get_object
from ._output import print_data, print_rows

SCHEDULE_KINDS = ("schedule", "schedules", "ksched")
SKIPPED_EXIT = 1
"""Exit status when the concurrency policy skipped a tick asked for."""


def trigger(args: argparse.Namespace) -> int:
    """Start one run of the schedule now (named `<schedule>-manual-<time>z`)."""
    api, namespace, obj = _schedule(args.ref, args.namespace)
    now = datetime.now(UTC).replace(microsecond=0)
    return _start(args, api, namespace, obj, [now], "manual")


def backfill(args: argparse.Namespace) -> int:
    """Start the run of every tick in [--from, --to] that has none yet."""
    try:
        start = requests.parse_time(args.start, "from")
        end = requests.parse_time(args.end, "to")
        requests.check_range(start, end, datetime.now(UTC))
        api, namespace, obj = _schedule(args.ref, args.namespace)
        _, cadence = _parse(obj)
        wanted = requests.backfill_ticks(cadence, start, end, datetime.now(UTC))
    except requests.BadRange as e:
        raise UserError(f"--{e.field} {e.problem}") from None
    if not wanted and args.output:
        print_data(args, [])
        return 0
    if not wanted:
        print(f"no tick of {cadence.describe()} between {args.start} and {args.end}")
        return 0
    return _start(args, api, namespace, obj, wanted, "backfill")


def _start(
    args: argparse.Namespace,
    api: Any,
    namespace: str,
    obj: dict[str, Any],
    wanted: list[datetime],
    origin: requests.Origin,
) -> int:
    """Start the runs of `wanted` through the policy; print one row per tick (`-o`)."""
    spec, _ = _parse(obj)
    name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
    listed = api.list_namespaced_custom_object(
        GROUP, VERSION, namespace, WORKFLOW.plural,
        label_selector=f"{ticks.SCHEDULE_UID_LABEL}={uid}",
    )["items"]  # fmt: skip
    try:
        planned = requests.plan(obj, spec, listed, wanted, origin)
    except expressions.ExpressionError as e:
        raise UserError(f"schedule/{name}: {e}") from None
    rows: list[tuple[str, str, str]] = []
    for run in planned.cancel:
        api.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, WORKFLOW.plural, run, {"spec": {"cancel": True}}
        )
        rows.append(("cancelled", run, "concurrencyPolicy Replace"))
    for body in planned.bodies:
        rows.append(_create(api, namespace, body))
    for tick, why in planned.skipped:
        rows.append(("skipped", ticks.rfc3339(tick), why))
    print_rows(args, ("RESULT", "RUN", "DETAIL"), rows)
    return SKIPPED_EXIT if planned.skipped else 0


def _create(api: Any, namespace: str, body: dict[str, Any]) -> tuple[str, str, str]:
    from kubernetes import client

    name = body["metadata"]["name"]
    tick = body["metadata"]["annotations"][ticks.SCHEDULED_TIME_ANNOTATION]
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, WORKFLOW.plural, body)
    except client.ApiException as e:
        if e.status == 409:
            return ("exists", name, f"tick {tick} was started already")
        raise UserError(f"cannot start {name}: {e.reason} {e.body}") from None
    return ("started", name, f"tick {tick}")


def _parse(obj: dict[str, Any]) -> tuple[ScheduleSpec, ticks.Cadence]:
    try:
        return ticks.parse(obj.get("spec") or {})
    except ticks.InvalidSchedule as e:
        raise UserError(
            f"schedule/{obj['metadata']['name']} is invalid: {describe(e.problems)}"
        ) from None


def _schedule(ref: str, namespace: str | None) -> tuple[Any, str, dict[str, Any]]:
    """The API client, the namespace and the Schedule `ref` names."""
    return get_object(ref, namespace, SCHEDULE, SCHEDULE_KINDS)
