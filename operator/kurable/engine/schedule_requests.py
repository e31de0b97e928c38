"""Runs of a Schedule started on request: `trigger` (one run now) and `backfill` (each tick
in a range). Pure; the CLI (with the caller's credentials) and the endpoint (with its
ServiceAccount, after the caller's SubjectAccessReview) both read the Schedule and its runs,
call `backfill_ticks` / `plan`, then do what the plan says: cancel `plan.cancel`, create
`plan.bodies` (a 409 means the tick was started already: the run's name is its idempotency
key), report `plan.skipped`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from kurable.api.v1alpha1 import ScheduleSpec

from . import schedules as ticks

MAX_BACKFILL = 1000
"""The most ticks one backfill starts (split a longer range)."""

Origin = Literal["manual", "backfill"]


class BadRange(ValueError):
    """A backfill range that cannot be used; `field` (`from` or `to`) is the bound at fault,
    `problem` says what is wrong with it and what to send instead."""

    def __init__(self, field: Literal["from", "to"], problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(f"{field} {problem}")


def parse_time(text: str, field: Literal["from", "to"]) -> datetime:
    """`text` (RFC 3339 with a UTC offset, e.g. `2026-12-01T00:00:00Z`) as a UTC datetime.
    Raises BadRange when it is not one."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise BadRange(
            field, f"{text!r} is not a time: use RFC 3339, e.g. 2026-12-01T00:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise BadRange(field, f"{text!r} has no UTC offset: add Z or +01:00")
    return moment.astimezone(UTC)


def check_range(start: datetime, end: datetime, now: datetime) -> None:
    """Raises BadRange when `end` is before `start` or after `now` (the schedule starts
    future ticks itself)."""
    if end < start:
        raise BadRange("to", "is before from: give a range that starts before it ends")
    if end > now:
        raise BadRange("to", "is in the future: the schedule starts those ticks itself")


def backfill_ticks(
    cadence: ticks.Cadence,
    start: datetime,
    end: datetime,
    now: datetime,
    limit: int = MAX_BACKFILL,
) -> list[datetime]:
    """The ticks of `cadence` in [start, end] (aware datetimes), in order. Raises BadRange
    when `end` is before `start`, after `now` (the schedule starts those ticks itself), or
    the range holds more than `limit` ticks."""
    check_range(start, end, now)
    wanted: list[datetime] = []
    for tick in cadence.ticks(start - timedelta(microseconds=1)):
        if tick > end:
            break
        if len(wanted) == limit:
            raise BadRange("to", f"the range holds more than {limit} ticks: backfill it in parts")
        wanted.append(tick)
    return wanted


@dataclass(frozen=True)
class Plan:
    """What a trigger or backfill does: cancel `cancel` (run names, Replace), create
    `bodies` (Workflow objects, in tick order), and skip `skipped` (tick, why)."""

    cancel: tuple[str, ...]
    bodies: tuple[dict[str, Any], ...]
    skipped: tuple[tuple[datetime, str], ...]


def plan(
    schedule: Mapping[str, Any],
    spec: ScheduleSpec,
    listed: Sequence[Mapping[str, Any]],
    wanted: Sequence[datetime],
    origin: Origin,
) -> Plan:
    """The runs to start for the ticks `wanted` of `schedule` (its object; `spec` parsed
    from it), its concurrency policy applied against its active runs among `listed` (the
    Workflows labelled with its uid). A run started by hand is not buffered (nothing keeps
    it), so BufferOne acts as Forbid. Raises ExpressionError when the input's expressions
    fail."""
    uid = str(schedule["metadata"]["uid"])
    active = [r for r in ticks.owned_runs(listed, uid) if r.active]
    policy: ticks.Policy = (
        "Forbid" if spec.concurrency_policy == "BufferOne" else spec.concurrency_policy
    )
    decided = ticks.apply_policy(policy, wanted, len(active))
    cancel = tuple(r.name for r in active) if decided.cancel_active else ()
    bodies = tuple(ticks.run_body(schedule, spec, tick, trigger=origin) for tick in decided.start)
    if spec.concurrency_policy == "Replace":
        why = "a later tick replaced it (concurrencyPolicy Replace)"
    elif active:
        why = f"a run is active (concurrencyPolicy {spec.concurrency_policy})"
    else:
        why = f"one run at a time (concurrencyPolicy {spec.concurrency_policy})"
    return Plan(cancel=cancel, bodies=bodies, skipped=tuple((t, why) for t, _ in decided.skipped))
