"""The schedule driver: one task per Schedule starts the runs of its ticks.

Each pass reads the Schedule and its runs from the API server, asks the pure engine
(kurable.engine.schedules) what is due, creates those runs, cancels runs (Replace),
deletes runs past the history limits, posts Events for skipped ticks and projects
status; then it sleeps until the next tick is due or something changes (the Schedule,
or one of its runs: kurable.handlers.workflow wakes a run's owners).

Exactly once per tick, across crashes: the run's name is derived from the tick
(engine.schedules.run_name), so creating it twice answers AlreadyExists. A pass starts
after the latest tick handled, `status.lastHandledTime`, written only once the pass's
runs exist. A crash between creating a run and writing status replays the pass: the
ticks whose runs exist (annotation `kurable.dev/scheduled-time`) are recovered as
started, never decided again, and the others are decided as if for the first time. So
a crash neither skips a tick (the cursor never passes a tick not yet decided) nor
doubles one (the name), and the counts in status stay exact. Cursor and runs live in
the API server next to the Schedule: the operator's etcd would add nothing a Schedule
needs (there is no journal to keep: a pass is one idempotent decision per tick).

A Schedule is driven by one task of this process (`ScheduleDrivers`), started by kopf's
daemon (kurable.handlers.schedule). With several replicas, `ScheduleDrivers.owns` is
where a replica declines the Schedules it does not own (sharding: a hash of the uid over
the live members, as for runs); the run names keep any overlap harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kubernetes_asyncio import client as k8s

from kurable.api.v1alpha1 import (
    GROUP,
    SCHEDULE,
    VERSION,
    WORKFLOW,
    WORKFLOW_TEMPLATE,
    ScheduleSpec,
    duration_seconds,
)
from kurable.engine import expressions
from kurable.engine import schedules as ticks
from kurable.engine.conditions import updated_condition
from kurable.engine.journal import now_rfc3339, parse_time
from kurable.engine.messages import one_line
from kurable.engine.validate import describe

from . import metrics
from .actions import RunRef
from .drivers import Logger
from .errors import api_error_message, describe_error
from .owned import OwnedDrivers
from .runtime import Runtime

POLL_SECONDS = 60.0
"""The longest a driver sleeps without looking (a change of the Schedule or of one of its
runs wakes it at once; so does its next tick)."""
RETRY_SECONDS = 5.0
"""After a pass failed (the API server unreachable): try again this much later."""
TEMPLATE_POLL_SECONDS = 10.0
"""While the template does not exist: look again this often (no event says it appeared)."""


def schedule_drivers(runtime: Runtime) -> ScheduleDrivers:
    """The Schedules this process drives, each by one task at most: those it owns among
    the replicas sharing the work (kurable.executor.shards), like runs."""
    return ScheduleDrivers(runtime, owns=runtime.shards.owns)


class ScheduleDrivers(OwnedDrivers):
    """One task per Schedule in this process, whoever asked first.

    Schedules are few and long-lived, so each has a task for as long as it exists (unlike
    runs, which are parked while they wait: kurable.executor.drivers). With several
    replicas sharing the work, a replica drives only the Schedules it `owns(uid)`, as
    `Drivers.owns` does for runs, and lets go of the others when the members change
    (`disown`); kopf's daemon of a Schedule not owned here keeps asking.
    """

    _label = "schedule"

    def _make(self, body: Mapping[str, Any], ref: RunRef, logger: Logger) -> ScheduleDriver:
        return ScheduleDriver(self.runtime, body, ref, logger)


class _Waiting(Exception):
    """The schedule cannot tick yet (invalid, template missing); status says why."""

    def __init__(self, delay: float | None) -> None:
        super().__init__()
        self.delay = delay


class ScheduleDriver:
    """One process's hold on one Schedule."""

    def __init__(
        self, runtime: Runtime, body: Mapping[str, Any], ref: RunRef, logger: Logger
    ) -> None:
        self.runtime = runtime
        self.body = body
        self.ref = ref
        self.logger = logger
        self.wakeup = runtime.wakeup(ref.uid)
        self.said = ""
        """The last problem announced by an Event (not repeated every pass)."""

    def close(self) -> None:
        self.runtime.unsubscribe(self.ref.uid, self.wakeup)

    async def drive(self) -> None:
        """Pass after pass until the Schedule is gone (or the task is cancelled)."""
        while True:
            self.wakeup.clear()
            try:
                delay = await self.tick_once()
            except _Waiting as waiting:
                delay = waiting.delay
            except asyncio.CancelledError:
                raise
            except Exception as e:  # an outage: the next pass decides again, from scratch
                self.logger.warning(f"schedule pass failed, retrying: {describe_error(e)}")
                delay = RETRY_SECONDS
            if delay is None:
                return
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wakeup.wait(), min(delay, POLL_SECONDS))

    async def tick_once(self, now: datetime | None = None) -> float | None:
        """One pass; the seconds until the next is due (None: the Schedule is gone)."""
        ref = self.ref
        obj = await self.runtime.get(SCHEDULE, ref.namespace, ref.name)
        if obj is None or obj["metadata"]["uid"] != ref.uid:
            return None
        self.body = obj
        status = obj.get("status") or {}
        spec, cadence = await self._valid(obj)
        now = now or datetime.now(UTC)
        listed = await self.runtime.list_objects(
            WORKFLOW, ref.namespace, f"{ticks.SCHEDULE_UID_LABEL}={ref.uid}"
        )
        runs = ticks.owned_runs(listed, ref.uid)
        handled = _time(status.get("lastHandledTime"))
        created = parse_time(obj["metadata"]["creationTimestamp"])
        after = max(created, handled) if handled is not None else created
        # Resumed since the last pass: the ticks passed while suspended are not replayed,
        # even those the operator did not see pass (it was down).
        was_suspended = _condition(status, "Suspended") == "True"
        active = [r for r in runs if r.active]
        decided = ticks.plan(
            cadence,
            uid=ref.uid,
            after=after,
            now=now,
            policy=spec.concurrency_policy,
            active=len(active),
            buffered=_time(status.get("bufferedTime")),
            jitter=duration_seconds(spec.jitter) if spec.jitter else 0.0,
            window=duration_seconds(spec.catchup_window),
            suspended=spec.suspend or was_suspended,
            existing=frozenset(r.tick for r in runs if r.tick is not None and r.trigger is None),
        )
        if decided.cancel_active:
            await self._cancel(listed, {r.name for r in active})
        started = [(ticks.run_name(ref.name, t), t) for t in decided.recovered]
        skipped = list(decided.skipped)
        for tick in decided.start:
            name, problem = await self._start(obj, spec, tick)
            if problem is None:
                started.append((name, tick))
            else:
                skipped.append(ticks.Skipped(problem[0], 1, tick, tick))
                self._event("Warning", problem[0], problem[1])
        for group in skipped:
            self._event("Warning", "TickSkipped", group.describe(spec.catchup_window))
        skipped_by_reason: dict[str, int] = {}
        for group in skipped:
            skipped_by_reason[group.reason] = skipped_by_reason.get(group.reason, 0) + group.count
        fresh = len(started) - len(decided.recovered)
        metrics.ticks(ref.namespace, ref.name, fresh, skipped_by_reason)
        for name, _ in started:
            self._event("Normal", "RunStarted", f"started run {name}")
        deleted = await self._prune(runs, spec)
        status = self._status(obj, spec, cadence, runs, decided, started, skipped, deleted)
        await self.runtime.patch_status(SCHEDULE, ref.namespace, ref.name, status)
        if decided.more:
            return 0.0
        if decided.next_due is None:
            return POLL_SECONDS
        return max(0.0, (decided.next_due - datetime.now(UTC)).total_seconds())

    async def _valid(self, obj: Mapping[str, Any]) -> tuple[ScheduleSpec, ticks.Cadence]:
        """The parsed spec and cadence; else status says what to fix and _Waiting."""
        try:
            spec, cadence = ticks.parse(obj.get("spec") or {})
        except ticks.InvalidSchedule as e:
            raise await self._not_ready(obj, "Invalid", describe(e.problems), None) from None
        template = await self.runtime.get(
            WORKFLOW_TEMPLATE, self.ref.namespace, spec.template_ref.name
        )
        if template is None:
            raise await self._not_ready(
                obj,
                "TemplateNotFound",
                f"spec.templateRef: WorkflowTemplate {spec.template_ref.name!r} does not exist "
                f"in namespace {self.ref.namespace!r}: create it (ticks wait meanwhile and "
                "start late inside the catch-up window)",
                TEMPLATE_POLL_SECONDS,
            )
        return spec, cadence

    async def _not_ready(
        self, obj: Mapping[str, Any], reason: str, message: str, delay: float | None
    ) -> _Waiting:
        """Say in status (and once in an Event) why the schedule does not tick; the
        _Waiting to raise (Invalid: a change of the spec wakes the driver; a missing
        template: look again after `delay`)."""
        status = obj.get("status") or {}
        generation = obj["metadata"].get("generation")
        patch = {
            "message": message,
            "observedGeneration": generation,
            "nextScheduleTime": None,
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
        }
        await self.runtime.patch_status(SCHEDULE, self.ref.namespace, self.ref.name, patch)
        if message != self.said:
            self.said = message
            self._event("Warning", reason, message)
            self.logger.warning(f"{reason}: {message}")
        return _Waiting(POLL_SECONDS if delay is None else delay)

    async def _start(
        self, obj: Mapping[str, Any], spec: ScheduleSpec, tick: datetime
    ) -> tuple[str, tuple[str, str] | None]:
        """Create the run of `tick`; (its name, None), or (name, (reason, message)) when
        it cannot be made (its input does not evaluate, the API server refuses it)."""
        name = ticks.run_name(self.ref.name, tick)
        try:
            body = ticks.run_body(obj, spec, tick)
        except expressions.ExpressionError as e:
            return name, ("InputError", f"tick {ticks.rfc3339(tick)}: {e}")
        try:
            await k8s.CustomObjectsApi(self.runtime.api).create_namespaced_custom_object(
                GROUP, VERSION, self.ref.namespace, WORKFLOW.plural, body
            )
        except k8s.ApiException as e:
            if e.status == 409:  # started already, by an earlier pass that crashed
                return name, None
            if e.status in (400, 422):
                return name, ("RunRejected", f"cannot start {name}: {api_error_message(e)}")
            raise
        return name, None

    async def _cancel(self, listed: list[dict[str, Any]], names: set[str]) -> None:
        """Replace: set `spec.cancel` on the active runs (only the objects listed)."""
        for obj in listed:
            meta = obj["metadata"]
            if meta["name"] not in names or (obj.get("spec") or {}).get("cancel"):
                continue
            patch = [
                {"op": "test", "path": "/metadata/uid", "value": meta["uid"]},
                {"op": "add", "path": "/spec/cancel", "value": True},
            ]
            try:
                await self.runtime.patch_json(WORKFLOW, self.ref.namespace, meta["name"], patch)
            except k8s.ApiException as e:
                if e.status not in (404, 422):
                    raise
                continue
            self._event("Normal", "RunReplaced", f"cancelled run {meta['name']} (Replace)")

    async def _prune(self, runs: list[ticks.ScheduledRun], spec: ScheduleSpec) -> set[str]:
        """Delete the finished runs past the history limits; their names."""
        doomed = ticks.runs_to_delete(
            runs, spec.successful_runs_history_limit, spec.failed_runs_history_limit
        )
        for name in doomed:
            await self.runtime.delete(WORKFLOW, self.ref.namespace, name)
        return set(doomed)

    def _status(
        self,
        obj: Mapping[str, Any],
        spec: ScheduleSpec,
        cadence: ticks.Cadence,
        runs: list[ticks.ScheduledRun],
        decided: ticks.Pass,
        started: list[tuple[str, datetime]],
        skipped: list[ticks.Skipped],
        deleted: set[str],
    ) -> dict[str, Any]:
        """The status after a pass: a projection of the runs and of the pass's decisions."""
        status = obj.get("status") or {}
        generation = obj["metadata"].get("generation")
        active = [
            {"name": r.name, "scheduledTime": ticks.rfc3339(r.tick) if r.tick else None}
            for r in runs
            if r.active and r.name not in deleted
        ]
        known = {a["name"] for a in active}
        for name, tick in started:
            if name not in known:
                active.append({"name": name, "scheduledTime": ticks.rfc3339(tick)})
        counts = dict(status.get("skipped") or {})
        for group in skipped:
            counts[group.reason] = counts.get(group.reason, 0) + group.count
        scheduled = [r.tick for r in runs if r.tick is not None and r.trigger is None]
        last = max([*scheduled, *(tick for _, tick in started)], default=None)
        previous_last = _time(status.get("lastScheduleTime"))
        if previous_last is not None and (last is None or previous_last > last):
            last = previous_last
        handled = decided.handled or _time(status.get("lastHandledTime"))
        conditions = status.get("conditions")
        ready = updated_condition(
            "Ready",
            "True",
            "Scheduling",
            f"ticking {cadence.describe()}",
            generation,
            conditions,
            now_rfc3339(),
        )
        suspended = updated_condition(
            "Suspended",
            "True" if spec.suspend else "False",
            "Suspended" if spec.suspend else "Ticking",
            "ticks are skipped until spec.suspend is false" if spec.suspend else "",
            generation,
            conditions,
            now_rfc3339(),
        )
        self.said = ""
        return {
            "schedule": cadence.describe(),
            "lastScheduleTime": ticks.rfc3339(last) if last else None,
            "lastHandledTime": ticks.rfc3339(handled) if handled else None,
            "nextScheduleTime": ticks.rfc3339(decided.next_tick) if decided.next_tick else None,
            "bufferedTime": ticks.rfc3339(decided.buffered) if decided.buffered else None,
            "active": active,
            "activeCount": len(active),
            "started": int(status.get("started") or 0) + len(started),
            "skipped": counts,
            "message": None,
            "observedGeneration": generation,
            "conditions": [ready.to_status(), suspended.to_status()],
        }

    def _event(self, type_: str, reason: str, message: str) -> None:
        message = one_line(message)
        queue = self.runtime.event_queue
        if queue is None or not queue(self.body, type_, reason, message):
            self.runtime.post_event(self.body, type_, reason, message)


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def _condition(status: Mapping[str, Any], kind: str) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status"))
    return None
