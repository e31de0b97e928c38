"""`Schedule`: starts runs of a WorkflowTemplate on a cron or an interval."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._base import (
    DURATION_PATTERN,
    Conditions,
    Duration,
    JSONObject,
    JSONValue,
    Model,
    ObjectRef,
    cel,
    validations,
)

CONCURRENCY_POLICIES = ("Allow", "Forbid", "Replace", "BufferOne")
"""What a tick does while runs of earlier ticks are still active."""

CRON_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
"""The `@` shorthands of cron, as the five fields they stand for."""

_CRON_FIELDS = "^ *[^ ]+( +[^ ]+){4,5} *$"
_MACRO = "|".join(CRON_MACROS)
CRON_MESSAGE = (
    "cron must be 5 fields (minute hour day-of-month month day-of-week, e.g. '30 2 * * *'), "
    "6 fields with seconds first, or one of " + ", ".join(CRON_MACROS)
)
EVERY_MESSAGE = "every must be a duration of at least 1s, such as 2s, 15m, 1h30m or 1d (not in ms)"

Cron = Annotated[
    str,
    Field(
        min_length=1,
        max_length=256,
        json_schema_extra=validations(
            cel(f"self.matches('{_CRON_FIELDS}') || self.matches('^({_MACRO})$')", CRON_MESSAGE)
        ),
    ),
]
"""A cron expression: 5 fields, 6 with seconds first, or an `@` shorthand."""

Every = Annotated[
    str,
    Field(
        max_length=64,
        json_schema_extra=validations(
            # At least a second: shorter ones would start runs faster than they are noticed.
            cel(
                f"self.matches('{DURATION_PATTERN}') && !self.matches('^[0.]+(ms|s|m|h|d)$')"
                " && !self.matches('^[0-9.]+ms$')",
                EVERY_MESSAGE,
            )
        ),
    ),
]
"""An interval between ticks, counted from the Unix epoch (UTC), so ticks fall on round
times: `every: 15m` ticks at :00, :15, :30 and :45."""


class ScheduleSpec(Model):
    """When to start runs (a cron in a time zone, or an interval) and of what."""

    cron: Cron | None = None
    """5 fields (`30 2 * * *`), 6 fields with seconds first, or `@hourly`, `@daily`, ...;
    read in `timeZone`. Exactly one of cron and every."""
    every: Every | None = None
    """An interval (`15m`, `2s`): ticks at the multiples of it since the Unix epoch.
    Exactly one of cron and every."""
    time_zone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    """The IANA time zone the cron is read in (`Europe/Berlin`). On a day the clocks
    spring forward, a time that does not exist fires at the first minute after the gap;
    on a day they fall back, a repeated time fires once (the first)."""
    jitter: Duration | None = None
    """Start each tick's run up to this much later, by an offset derived from the
    Schedule's uid and the tick (the same after a restart)."""
    template_ref: ObjectRef
    """The WorkflowTemplate each run runs."""
    input: JSONValue = None
    """The run's input; `${ }` expressions see `schedule.time` (the tick, RFC 3339 in
    UTC) and `schedule.name`."""
    concurrency_policy: Literal["Allow", "Forbid", "Replace", "BufferOne"] = "Allow"
    """When runs of earlier ticks are active: Allow starts the tick anyway; Forbid skips
    it; Replace cancels the active runs and starts it; BufferOne starts it once they
    end (one tick waits at most, later ones are skipped)."""
    catchup_window: Duration = "1h"
    """A tick missed while the operator was down starts late if it is at most this late;
    an older one is skipped (reason `OutsideCatchupWindow`)."""
    suspend: bool = False
    """Stop ticking. Ticks that pass while suspended are skipped (reason `Suspended`):
    resuming does not replay them."""
    successful_runs_history_limit: Annotated[int, Field(ge=0)] = 3
    """Succeeded runs to keep; older ones are deleted."""
    failed_runs_history_limit: Annotated[int, Field(ge=0)] = 3
    """Failed or cancelled runs to keep; older ones are deleted."""

    model_config = {
        "json_schema_extra": validations(
            cel(
                "has(self.cron) != has(self.every)",
                "a schedule needs exactly one of spec.cron or spec.every",
            ),
            cel(
                "!has(self.every) || !has(self.timeZone) || self.timeZone == 'UTC'",
                "timeZone applies to cron only: an every interval counts from the Unix epoch",
            ),
        )
    }


class ScheduleRunRef(Model):
    """An active run of the schedule."""

    name: str
    """The Workflow."""
    scheduled_time: str | None = None
    """Its tick (RFC 3339)."""


class ScheduleStatus(Model):
    """Written by the operator only: where the schedule is, projected from its runs."""

    schedule: str | None = None
    """The cadence in words (`30 2 * * * in Europe/Berlin`, `every 2s`)."""
    last_schedule_time: str | None = None
    """The tick of the latest run started (RFC 3339)."""
    last_handled_time: str | None = None
    """The latest tick handled, started or skipped (RFC 3339): the next pass starts after it."""
    next_schedule_time: str | None = None
    """The next tick (RFC 3339), before jitter."""
    buffered_time: str | None = None
    """BufferOne: the tick waiting for the active runs to end."""
    active: list[ScheduleRunRef] | None = None
    """Runs started by the schedule that have not finished."""
    active_count: int | None = None
    """How many runs are active."""
    started: int | None = None
    """Ticks that started a run."""
    skipped: dict[str, int] | None = None
    """Ticks skipped, by reason (Forbid, OutsideCatchupWindow, Suspended, Replaced,
    BufferFull)."""
    message: str | None = None
    """What is happening, or what to fix."""
    observed_generation: int | None = None
    """The metadata.generation acted on."""
    conditions: Conditions | None = None
    """Ready: True while ticking; False with reason Invalid (the message names the field),
    TemplateNotFound or Suspended."""
    kopf: JSONObject | None = None
    """The framework's own bookkeeping (kopf)."""
