"""The operator's Prometheus metrics, counted at the edges (journal commits, entity
commands, schedule passes); `kurable operator --metrics HOST:PORT` serves them.

Labels carry bounded values only: namespaces, template, EntityType, command and Schedule
names (definitions, not runs), step kinds, phases and outcomes. Never a run's name or uid.

Each journal record committed by this process counts once (`record_committed`); a
journal read back after a restart counts nothing again (Prometheus sees the new
process's counters start from zero, as after any restart).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from kurable.engine.decide import resolve
from kurable.engine.journal import Record, RunState, parse_time

STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
"""Seconds: steps range from a `set` (milliseconds) to a `sleep` or `wait` (hours)."""
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

RUNS_STARTED = Counter(
    "kurable_workflow_runs_started_total",
    "Workflow runs started (their WorkflowStarted record committed).",
    ["namespace", "template"],
)
RUNS_FINISHED = Counter(
    "kurable_workflow_runs_finished_total",
    "Workflow runs finished, by terminal phase.",
    ["namespace", "template", "phase"],
)
RUNS_IN_FLIGHT = Gauge(
    "kurable_workflow_runs_in_flight",
    "Unfinished runs this replica holds (acting or parked).",
)
STEP_DURATION = Histogram(
    "kurable_workflow_step_duration_seconds",
    "Step attempts, from StepStarted to their outcome, by step kind and outcome "
    "(succeeded, retrying, failed).",
    ["kind", "outcome"],
    buckets=STEP_BUCKETS,
)
STEP_RETRIES = Counter(
    "kurable_workflow_step_retries_total",
    "Failed step attempts that will be retried.",
    ["kind"],
)
COMPENSATIONS = Counter(
    "kurable_workflow_compensations_total",
    "Compensations that ended, by outcome (succeeded, failed).",
    ["outcome"],
)
TIMEOUTS = Counter(
    "kurable_workflow_timeouts_total",
    "Timeouts: of a step attempt (scope=step) or of a whole run (scope=run).",
    ["scope"],
)
JOURNAL_COMMIT = Histogram(
    "kurable_journal_commit_duration_seconds",
    "Journal commits: one etcd transaction appending one or more records under the fence.",
    buckets=COMMIT_BUCKETS,
)
FENCING_REFUSALS = Counter(
    "kurable_fencing_refusals_total",
    "Journal commits refused because this executor no longer held the run's fence.",
)
ENTITY_COMMANDS = Counter(
    "kurable_entity_commands_total",
    "Entity commands sent by this process, by EntityType, command and result "
    "(ok, duplicate, or the exception's class name).",
    ["type", "command", "result"],
)
ENTITY_COMMAND_DURATION = Histogram(
    "kurable_entity_command_duration_seconds",
    "Entity commands, from queued to committed or refused.",
    ["type", "command"],
    buckets=(*COMMIT_BUCKETS, 5, 10),
)
SCHEDULE_TICKS_STARTED = Counter(
    "kurable_schedule_ticks_started_total",
    "Schedule ticks whose run was started.",
    ["namespace", "schedule"],
)
SCHEDULE_TICKS_SKIPPED = Counter(
    "kurable_schedule_ticks_skipped_total",
    "Schedule ticks skipped, by reason (Forbid, MissedWindow, Suspended, InputError, ...).",
    ["namespace", "schedule", "reason"],
)
# Consumers and views are built beside this (kurable_consumer_lag_messages and
# kurable_view_lag_seconds): they define their gauges where they track their offsets.


def set_in_flight(count: Callable[[], int]) -> None:
    """Let `kurable_workflow_runs_in_flight` read `count()` at each scrape."""
    RUNS_IN_FLIGHT.set_function(lambda: float(count()))


def _template(state: RunState) -> str:
    return str((state.template or {}).get("name") or "")


def _kind(state: RunState, step: str | None) -> str:
    """The step's action (`http`, `set`, ...), or `compensate`; `unknown` for a step the
    definition does not name (never the step's own name: names of forEach items vary)."""
    if step is None:
        return "unknown"
    if step.endswith(":compensate"):
        return "compensate"
    if state.spec is None:
        return "unknown"
    found = resolve(state, step)
    return "unknown" if found is None else str(found.action)


def record_committed(
    before: RunState, record: Record, after: RunState, seconds: float | None
) -> None:
    """Count one record this process committed (`before`/`after`: the run's state around
    it; `seconds`: how long its transaction took, None for the further records of one
    transaction, which is observed once)."""
    if seconds is not None:
        JOURNAL_COMMIT.observe(seconds)
    data = record.data.to_wire()
    namespace = str(after.workflow.get("namespace") or "")
    if record.type == "WorkflowStarted":
        RUNS_STARTED.labels(namespace, _template(after)).inc()
    elif record.type == "WorkflowFinished":
        RUNS_FINISHED.labels(namespace, _template(after), str(data.get("phase"))).inc()
        if data.get("reason") == "Timeout":
            TIMEOUTS.labels("run").inc()
    elif record.type in ("StepCompleted", "StepFailed") and record.step is not None:
        kind = _kind(after, record.step)
        retrying = record.type == "StepFailed" and bool(data.get("retryAt"))
        outcome = (
            "succeeded" if record.type == "StepCompleted" else "retrying" if retrying else "failed"
        )
        # A step the engine decides alone (`set`) journals no StepStarted: it took no time.
        started = before.step(record.step).started_at or record.at
        elapsed = (parse_time(record.at) - parse_time(started)).total_seconds()
        STEP_DURATION.labels(kind, outcome).observe(max(0.0, elapsed))
        if retrying:
            STEP_RETRIES.labels(kind).inc()
        if kind == "compensate":
            COMPENSATIONS.labels("succeeded" if record.type == "StepCompleted" else outcome).inc()
        if record.type == "StepFailed" and (data.get("error") or {}).get("kind") == "Timeout":
            TIMEOUTS.labels("step").inc()


def fencing_refused() -> None:
    FENCING_REFUSALS.inc()


class Stopwatch:
    """Seconds since it was made (monotonic)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start


def command_done(type_: str, command: str, seconds: float, result: str) -> None:
    """Count one entity command (`result`: ok, duplicate, or the exception's class)."""
    ENTITY_COMMANDS.labels(type_, command, result).inc()
    ENTITY_COMMAND_DURATION.labels(type_, command).observe(seconds)


def ticks(namespace: str, schedule: str, started: int, skipped: dict[str, int]) -> None:
    """Count one Schedule pass: runs started, ticks skipped by reason."""
    if started:
        SCHEDULE_TICKS_STARTED.labels(namespace, schedule).inc(started)
    for reason, count in skipped.items():
        SCHEDULE_TICKS_SKIPPED.labels(namespace, schedule, reason).inc(count)
