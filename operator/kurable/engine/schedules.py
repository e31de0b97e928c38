"""Schedule ticks: when a Schedule's runs start, and what one pass over the due ticks does.

Pure: time is passed in, jitter is a hash, so a pass replayed after a crash decides the
same. The executor (kurable.executor.schedules) lists the schedule's runs, calls `plan`,
creates the runs it says to start (named by `run_name`: the name is the tick's
idempotency key) and records where the pass ended (`Pass.handled`) in status.

Ticks:
- `cron`: read in `timeZone` by cronsim (a maintained cron library; Debian cron's rules
  for daylight saving time: a time the clocks skip fires at the first minute after the
  gap, a time they repeat fires once, the first time); `@daily`-style shorthands are
  spelled out first (CRON_MACROS). Ticks are whole seconds.
- `every`: the multiples of the interval since the Unix epoch (UTC), whole seconds.

A tick's due time is the tick plus its jitter (`jitter_offset`: a hash of the schedule's
uid and the tick, in [0, jitter)). Ticks are handled in order: a pass stops at the first
tick not yet due, so jitter never reorders ticks.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import ValidationError

from kurable.api.v1alpha1 import API_VERSION, CRON_MACROS, SCHEDULE, WORKFLOW, ScheduleSpec
from kurable.api.v1alpha1 import duration_seconds as _duration_seconds

from . import expressions
from .names import derived_name, label_value
from .validate import Problem, model_problems

Policy = Literal["Allow", "Forbid", "Replace", "BufferOne"]

SCHEDULE_LABEL = "kurable.dev/schedule"
"""On each run: the schedule's name (as a label value)."""
SCHEDULE_UID_LABEL = "kurable.dev/schedule-uid"
"""On each run: the schedule's uid (selects its runs whatever the length of its name)."""
TRIGGER_LABEL = "kurable.dev/trigger"
"""On runs started by hand: `manual` (`kurable schedule trigger`) or `backfill`."""
SCHEDULED_TIME_ANNOTATION = "kurable.dev/scheduled-time"
"""On each run: its tick (RFC 3339, UTC)."""

MAX_TICKS_PER_PASS = 1000
"""Ticks one pass looks at: a pass that stops here says `more`, and the next follows at once."""
MAX_COUNTED = 100_000
"""Ticks counted one by one when a long outage skips them en bloc (more: reported as this)."""

SKIP_REASONS = ("Forbid", "Replaced", "BufferFull", "OutsideCatchupWindow", "Suspended")
"""Why a tick started no run: its concurrency policy (Forbid, Replace, BufferOne), its
lateness, or the schedule being suspended."""


class InvalidSchedule(ValueError):
    """A Schedule whose spec cannot tick; `problems` name each field and what to fix."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))


# -- cadence -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cadence:
    """When a schedule ticks: a cron in a time zone, or every `interval` seconds."""

    cron: str | None = None
    zone: str = "UTC"
    interval: int | None = None
    """Seconds between ticks (`every`)."""

    def describe(self) -> str:
        """`30 2 * * * in Europe/Berlin`, `@daily in UTC`, `every 2s`."""
        if self.cron is not None:
            return f"{self.cron} in {self.zone}"
        return f"every {_seconds_text(self.interval or 0)}"

    def ticks(self, after: datetime) -> Iterator[datetime]:
        """The ticks strictly after `after` (aware), in order, as UTC datetimes."""
        if self.interval is not None:
            step = self.interval
            n = int(after.timestamp() // step) + 1
            while True:
                yield datetime.fromtimestamp(n * step, UTC)
                n += 1
        assert self.cron is not None
        zone = ZoneInfo(self.zone)
        expression = CRON_MACROS.get(self.cron.strip(), self.cron)
        last = after
        while True:
            # cronsim works on wall-clock time: around a fall-back it may answer a time
            # before `last` (the repeated hour); such answers are dropped.
            for found in CronSim(expression, last.astimezone(zone)):
                tick = found.astimezone(UTC)
                if tick > last:
                    yield tick
                    last = tick
                    break
            else:  # pragma: no cover - cronsim gives up after 50 years without a match
                return

    def next_tick(self, after: datetime) -> datetime | None:
        """The first tick strictly after `after`, or None when there is none."""
        return next(self.ticks(after), None)


def cadence(spec: ScheduleSpec) -> Cadence:
    """The spec's cadence; raises InvalidSchedule naming the field when the cron does not
    parse, the time zone is unknown, or the interval is not whole seconds."""
    problems = _cadence_problems(spec)
    if problems:
        raise InvalidSchedule(problems)
    if spec.every is not None:
        return Cadence(interval=int(_duration_seconds(spec.every)))
    return Cadence(cron=spec.cron, zone=spec.time_zone)


def _cadence_problems(spec: ScheduleSpec) -> list[Problem]:
    problems = []
    if (spec.cron is None) == (spec.every is None):
        problems.append(Problem("spec", "needs exactly one of cron or every"))
    try:
        zone = ZoneInfo(spec.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(
            Problem(
                "spec.timeZone",
                f"unknown time zone {spec.time_zone!r}: use an IANA name such as UTC, "
                "Europe/Berlin or America/New_York",
            )
        )
        zone = None
    if spec.cron is not None:
        expression = CRON_MACROS.get(spec.cron.strip(), spec.cron)
        try:
            CronSim(expression, datetime(2000, 1, 1, tzinfo=zone or UTC))
        except CronSimError as e:
            problems.append(
                Problem(
                    "spec.cron",
                    f"{spec.cron!r} is not a cron expression ({e}): use 5 fields "
                    "(minute hour day-of-month month day-of-week, e.g. '30 2 * * *'), 6 with "
                    "seconds first, or @hourly, @daily, @weekly, @monthly, @yearly",
                )
            )
    if spec.every is not None:
        try:
            seconds = _duration_seconds(spec.every)
        except ValueError as e:
            problems.append(Problem("spec.every", str(e)))
        else:
            if seconds < 1 or seconds != int(seconds):
                problems.append(
                    Problem("spec.every", f"{spec.every!r} must be whole seconds, at least 1s")
                )
    return problems


def schedule_problems(spec: Mapping[str, Any]) -> list[Problem]:
    """Every problem of a Schedule's spec that the CRD rules cannot see (the cron's
    fields, the time zone, the input's expressions), each with its field; empty when the
    schedule can tick. (Whether its template exists is the executor's to find out.)"""
    try:
        parsed = ScheduleSpec.model_validate(dict(spec))
    except ValidationError as e:
        return model_problems(e, "spec")
    problems = _cadence_problems(parsed)
    for name, text in (("jitter", parsed.jitter), ("catchupWindow", parsed.catchup_window)):
        if text is not None:
            try:
                _duration_seconds(text)
            except ValueError as e:
                problems.append(Problem(f"spec.{name}", str(e)))
    try:
        expressions.check_names(parsed.input, ["schedule"], "spec.input")
    except expressions.ExpressionError as e:
        problems.append(
            Problem(e.where or "spec.input", f"expression {e.expression!r}: {e.problem}")
        )
    return problems


def parse(spec: Mapping[str, Any]) -> tuple[ScheduleSpec, Cadence]:
    """The spec parsed and its cadence; raises InvalidSchedule with every problem."""
    problems = schedule_problems(spec)
    if problems:
        raise InvalidSchedule(problems)
    parsed = ScheduleSpec.model_validate(dict(spec))
    return parsed, cadence(parsed)


# -- ticks and their runs --------------------------------------------------------------------


def jitter_offset(uid: str, tick: datetime, jitter: float) -> float:
    """How many seconds after `tick` its run starts: in [0, jitter), to the millisecond,
    derived from the schedule's uid and the tick only (the same in every replay)."""
    if jitter <= 0:
        return 0.0
    digest = hashlib.sha256(f"{uid}/{rfc3339(tick)}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return int(fraction * jitter * 1000) / 1000


def rfc3339(moment: datetime) -> str:
    """A tick as RFC 3339 in UTC, whole seconds: `2026-12-01T01:30:00Z`."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def run_name(schedule: str, tick: datetime) -> str:
    """The name of the run of `tick`: `<schedule>-<yyyymmdd>-<hhmm>z` in UTC, with seconds
    (`-<hhmmss>z`) when the tick has any; long names are shortened with a hash
    (names.derived_name). Deterministic: it is the tick's idempotency key."""
    utc = tick.astimezone(UTC)
    stamp = utc.strftime("%Y%m%d-%H%M%S" if utc.second else "%Y%m%d-%H%M") + "z"
    return derived_name(schedule, stamp)


def run_body(
    schedule: Mapping[str, Any],
    spec: ScheduleSpec,
    tick: datetime,
    trigger: str | None = None,
) -> dict[str, Any]:
    """The Workflow a tick starts: named by `run_name`, owned by the schedule (`schedule`:
    its object, for name and uid), labelled with it, annotated with the tick, running the
    template with the input rendered (`schedule.time`, `schedule.name`). `trigger`
    (`manual`, `backfill`) marks runs started by hand. Raises ExpressionError when the
    input's expressions fail."""
    meta = schedule["metadata"]
    name, uid = str(meta["name"]), str(meta["uid"])
    when = rfc3339(tick)
    context = {"schedule": {"time": when, "name": name}}
    labels = {SCHEDULE_LABEL: label_value(name), SCHEDULE_UID_LABEL: uid}
    if trigger is not None:
        labels[TRIGGER_LABEL] = trigger
    body: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": WORKFLOW.kind,
        "metadata": {
            "name": run_name(name, tick) if trigger != "manual" else manual_run_name(name, tick),
            "labels": labels,
            "annotations": {SCHEDULED_TIME_ANNOTATION: when},
            "ownerReferences": [
                {
                    "apiVersion": API_VERSION,
                    "kind": SCHEDULE.kind,
                    "name": name,
                    "uid": uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {"templateRef": {"name": spec.template_ref.name}},
    }
    if spec.input is not None:
        body["spec"]["input"] = expressions.render(spec.input, context, "spec.input")
    return body


def manual_run_name(schedule: str, moment: datetime) -> str:
    """The name of a run triggered by hand at `moment`: `<schedule>-manual-<stamp>z`, to
    the second (apart from the ticks' names, so that it never takes a tick's place)."""
    stamp = moment.astimezone(UTC).strftime("%Y%m%d-%H%M%S") + "z"
    return derived_name(schedule, "manual", stamp)


# -- one pass ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skipped:
    """Ticks skipped for one reason in one pass: how many, the first and the last."""

    reason: str
    count: int
    first: datetime
    last: datetime

    def describe(self, window: str = "") -> str:
        """One line for an Event: what was skipped and why."""
        what = f"tick {rfc3339(self.first)}"
        if self.count > 1:
            what = f"{self.count} ticks from {rfc3339(self.first)} to {rfc3339(self.last)}"
        why = {
            "Forbid": "a run of an earlier tick is still active (concurrencyPolicy Forbid)",
            "Replaced": "a later tick replaced it (concurrencyPolicy Replace)",
            "BufferFull": "another tick already waits for the active run "
            "(concurrencyPolicy BufferOne)",
            "OutsideCatchupWindow": "more than the catch-up window "
            + (f"({window}) " if window else "")
            + "late",
            "Suspended": "the schedule is suspended",
        }.get(self.reason, self.reason)
        return f"skipped {what}: {why}"


@dataclass(frozen=True)
class Policied:
    """What a concurrency policy makes of the due ticks."""

    start: tuple[datetime, ...] = ()
    skipped: tuple[tuple[datetime, str], ...] = ()
    cancel_active: bool = False
    """Replace: cancel the runs active before this pass."""
    buffered: datetime | None = None
    """BufferOne: the tick that waits for the active runs to end."""


def apply_policy(
    policy: Policy, due: Sequence[datetime], active: int, buffered: datetime | None = None
) -> Policied:
    """What `policy` does with the ticks `due` (in order) while `active` runs of earlier
    ticks have not finished, `buffered` (BufferOne) waiting already.

    - Allow: start every tick.
    - Forbid: start a tick only when no run is active (the first one started counts);
      skip the others (reason Forbid).
    - Replace: start the last tick, cancelling the active runs; skip the earlier due ticks
      (reason Replaced).
    - BufferOne: start a tick when no run is active; keep one waiting otherwise (the
      buffered one starts first, once the active runs end); skip the rest (BufferFull).
    """
    if policy == "Allow":
        return Policied(start=tuple(due))
    if policy == "Forbid":
        start: list[datetime] = []
        skipped: list[tuple[datetime, str]] = []
        for tick in due:
            if active or start:
                skipped.append((tick, "Forbid"))
            else:
                start.append(tick)
        return Policied(start=tuple(start), skipped=tuple(skipped))
    if policy == "Replace":
        if not due:
            return Policied()
        return Policied(
            start=(due[-1],),
            skipped=tuple((t, "Replaced") for t in due[:-1]),
            cancel_active=active > 0,
        )
    # BufferOne
    start, skipped = [], []
    running = active > 0
    waiting = buffered
    if not running and waiting is not None:
        start.append(waiting)
        waiting, running = None, True
    for tick in due:
        if not running:
            start.append(tick)
            running = True
        elif waiting is None:
            waiting = tick
        else:
            skipped.append((tick, "BufferFull"))
    return Policied(start=tuple(start), skipped=tuple(skipped), buffered=waiting)


@dataclass(frozen=True)
class Pass:
    """What one pass over a schedule's ticks decides."""

    start: tuple[datetime, ...] = ()
    """Ticks whose runs to create now, in order."""
    skipped: tuple[Skipped, ...] = ()
    """Ticks skipped, grouped by reason (for Events and status counts)."""
    cancel_active: bool = False
    """Cancel the runs that were active before the pass (Replace)."""
    buffered: datetime | None = None
    """The tick waiting for the active runs to end (BufferOne)."""
    handled: datetime | None = None
    """The latest tick this pass handled (started, skipped or buffered): the next pass
    starts after it. None: no tick handled (keep the previous)."""
    next_tick: datetime | None = None
    """The first tick not handled yet."""
    next_due: datetime | None = None
    """When it is due (the tick plus its jitter)."""
    more: bool = False
    """The pass stopped at MAX_TICKS_PER_PASS ticks: run the next one at once."""
    skipped_counts: Mapping[str, int] = field(default_factory=dict)
    """Ticks skipped, by reason."""
    recovered: tuple[datetime, ...] = ()
    """Ticks handled whose runs exist already (a pass that crashed before recording them):
    started, not decided again."""


def plan(
    cadence: Cadence,
    *,
    uid: str,
    after: datetime,
    now: datetime,
    policy: Policy = "Allow",
    active: int = 0,
    buffered: datetime | None = None,
    jitter: float = 0.0,
    window: float = 3600.0,
    suspended: bool = False,
    existing: frozenset[datetime] = frozenset(),
) -> Pass:
    """One pass: the ticks after `after` (the last tick handled) that are due at `now`.

    A tick is due when `now` reaches its due time (tick + jitter_offset). A due tick more
    than `window` seconds late is skipped (OutsideCatchupWindow); the others go through
    the concurrency `policy` with `active` runs of earlier ticks not finished and
    `buffered` waiting (BufferOne). While `suspended`, every due tick is skipped
    (Suspended) and nothing starts. Ticks far outside the window are skipped without
    being looked at one by one (counted up to MAX_COUNTED).

    `existing`: the ticks whose runs exist (listed). A tick after `after` with a run
    was started by a pass that crashed before it recorded `handled`: it is `recovered`
    (started) and never goes through the window or the policy again, so that a replayed
    pass cannot call a started tick skipped.
    """
    skips: list[tuple[datetime, str]] = []
    counted: list[Skipped] = []
    recovered: list[datetime] = []
    start_after = after
    # Ticks so late that even the largest jitter leaves them outside the window.
    horizon = now - timedelta(seconds=window + jitter)
    if not suspended and horizon > after:
        first = cadence.next_tick(after)
        if first is not None and first < horizon:
            count, last = _count(cadence, after, horizon)
            recovered = sorted(t for t in existing if after < t <= last)
            counted.append(Skipped("OutsideCatchupWindow", count - len(recovered), first, last))
            start_after = last
    due: list[datetime] = []
    handled = counted[-1].last if counted else None
    next_tick = next_due = None
    more = False
    for seen, tick in enumerate(cadence.ticks(start_after)):
        due_at = tick + timedelta(seconds=jitter_offset(uid, tick, jitter))
        if due_at > now:
            next_tick, next_due = tick, due_at
            break
        if seen == MAX_TICKS_PER_PASS:
            more = True
            next_tick, next_due = tick, due_at
            break
        handled = tick
        if tick in existing:
            recovered.append(tick)
        elif suspended:
            skips.append((tick, "Suspended"))
        elif (now - due_at).total_seconds() > window:
            skips.append((tick, "OutsideCatchupWindow"))
        else:
            due.append(tick)
    policied = (
        Policied(buffered=buffered) if suspended else apply_policy(policy, due, active, buffered)
    )
    groups = [g for g in counted if g.count > 0] + _group([*skips, *policied.skipped])
    totals: dict[str, int] = {}
    for group in groups:
        totals[group.reason] = totals.get(group.reason, 0) + group.count
    return Pass(
        start=policied.start,
        skipped=tuple(groups),
        cancel_active=policied.cancel_active,
        buffered=policied.buffered,
        handled=handled,
        next_tick=next_tick,
        next_due=next_due,
        more=more,
        skipped_counts=totals,
        recovered=tuple(recovered),
    )


def _count(cadence: Cadence, after: datetime, before: datetime) -> tuple[int, datetime]:
    """How many ticks lie in (after, before), and the last of them (at most MAX_COUNTED
    are counted: the last is then the MAX_COUNTED-th)."""
    if cadence.interval is not None:
        step = cadence.interval
        first = int(after.timestamp() // step) + 1
        final = math.ceil(before.timestamp() / step) - 1  # the last multiple below `before`
        return max(0, final - first + 1), datetime.fromtimestamp(final * step, UTC)
    count, last = 0, after
    for tick in cadence.ticks(after):
        if tick >= before or count == MAX_COUNTED:
            break
        count, last = count + 1, tick
    return count, last


def _group(skips: Sequence[tuple[datetime, str]]) -> list[Skipped]:
    groups: dict[str, Skipped] = {}
    for tick, reason in sorted(skips):
        old = groups.get(reason)
        groups[reason] = (
            Skipped(reason, 1, tick, tick)
            if old is None
            else Skipped(reason, old.count + 1, old.first, tick)
        )
    return list(groups.values())


# -- the schedule's runs -----------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduledRun:
    """One run of a schedule as its object says: name, tick, phase, how it was started."""

    name: str
    tick: datetime | None
    phase: str | None
    finished_at: str | None
    trigger: str | None
    created: str = ""

    @property
    def active(self) -> bool:
        return self.phase not in _TERMINAL

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ScheduledRun:
        """The run as listed from the API server."""
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        when = (meta.get("annotations") or {}).get(SCHEDULED_TIME_ANNOTATION)
        try:
            tick = datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None
        except ValueError:
            tick = None
        return cls(
            name=str(meta.get("name", "")),
            tick=tick,
            phase=status.get("phase"),
            finished_at=status.get("finishedAt"),
            trigger=(meta.get("labels") or {}).get(TRIGGER_LABEL),
            created=str(meta.get("creationTimestamp", "")),
        )


_TERMINAL = ("Succeeded", "Failed", "Cancelled", "Invalid")


def owned_runs(listed: Sequence[Mapping[str, Any]], uid: str) -> list[ScheduledRun]:
    """The runs among `listed` that the schedule `uid` owns (a run of the same label but
    another owner, e.g. of a schedule deleted and re-created, is not its run)."""
    return [
        ScheduledRun.of(obj)
        for obj in listed
        if any(
            o.get("uid") == uid for o in (obj.get("metadata") or {}).get("ownerReferences") or []
        )
    ]


def runs_to_delete(
    runs: Sequence[ScheduledRun], successful_limit: int, failed_limit: int
) -> list[str]:
    """The finished runs beyond the history limits, oldest first: keep the newest
    `successful_limit` Succeeded runs and `failed_limit` Failed, Cancelled or Invalid ones
    (newest by finishedAt, then tick, then name)."""

    def age(run: ScheduledRun) -> tuple[str, str, str]:
        tick = rfc3339(run.tick) if run.tick is not None else ""
        return (run.finished_at or run.created, tick, run.name)

    doomed: list[ScheduledRun] = []
    for phases, limit in ((("Succeeded",), successful_limit), (_TERMINAL[1:], failed_limit)):
        finished = sorted((r for r in runs if r.phase in phases), key=age)
        doomed += finished[: max(0, len(finished) - limit)]
    return [r.name for r in sorted(doomed, key=age)]


def _seconds_text(seconds: int) -> str:
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"
