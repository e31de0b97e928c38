"""Schedules on the real control plane: runs start on their ticks, exactly once per tick
across a SIGKILL of the operator, concurrency policies with a long-running template,
history limits, suspend and resume, validation, and the CLI's trigger and backfill."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from kurable.engine.journal import parse_time
from kurable.engine.schedules import SCHEDULED_TIME_ANNOTATION, Cadence, run_name
from kurable.testing import ControlPlane, OperatorProcess
from tests.conftest import ROOT

from .conftest import Isolated, apply, eventually, get, refused

pytestmark = pytest.mark.integration

QUICK = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "quick"},
    "spec": {"steps": [{"name": "stamp", "set": {"at": "${ input.at }"}}]},
}
LONG = {
    "apiVersion": "kurable.dev/v1alpha1",
    "kind": "WorkflowTemplate",
    "metadata": {"name": "long"},
    "spec": {"steps": [{"name": "nap", "sleep": {"duration": "10m"}}]},
}


def schedule(name: str, **spec: Any) -> dict[str, Any]:
    """A Schedule manifest named `name` with `spec` (default: `quick` with its tick)."""
    spec.setdefault("templateRef", {"name": "quick"})
    spec.setdefault("input", {"at": "${ schedule.time }"})
    return {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Schedule",
        "metadata": {"name": name},
        "spec": spec,
    }


def runs(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    """The schedule's runs, oldest tick first."""
    listed = json.loads(
        cp.kubectl(
            "get", "workflows", "-n", namespace, "-l", f"kurable.dev/schedule={name}", "-o", "json"
        ).stdout
    )["items"]
    return sorted(listed, key=tick_of)


def tick_of(run: dict[str, Any]) -> datetime:
    return parse_time(run["metadata"]["annotations"][SCHEDULED_TIME_ANNOTATION])


def status(cp: ControlPlane, namespace: str, name: str) -> dict[str, Any]:
    return get(cp, namespace, f"schedule/{name}").get("status") or {}


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == kind), {})


def events(cp: ControlPlane, namespace: str, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(
        cp.kubectl(
            "get", "events", "-n", namespace,
            "--field-selector", f"involvedObject.kind=Schedule,involvedObject.name={name}",
            "-o", "json",
        ).stdout
    )["items"]  # fmt: skip
    return items


def cli(cp: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kurable", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **cp.env()},
        timeout=60,
    )


def results(table: str) -> list[str]:
    """The RESULT column of the CLI's table."""
    return [line.split()[0] for line in table.splitlines()[1:] if line.strip()]


def test_every_2s_starts_one_run_per_tick_never_before_it(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, QUICK)
    apply(cp, namespace, schedule("pulse", every="2s", successfulRunsHistoryLimit=100))
    found = eventually(
        lambda: runs(cp, namespace, "pulse"), lambda rs: len(rs) >= 4, 60, "four runs"
    )
    ticks = [tick_of(r) for r in found]
    # One run per tick, consecutive 2 s ticks, none missing, none twice.
    assert all(b - a == timedelta(seconds=2) for a, b in pairwise(ticks))
    for run in found:
        tick = tick_of(run)
        assert run["metadata"]["name"] == run_name("pulse", tick)
        assert run["spec"]["input"] == {"at": tick.isoformat().replace("+00:00", "Z")}
        # Never early: created at or after its tick (creationTimestamp is whole seconds).
        assert parse_time(run["metadata"]["creationTimestamp"]) >= tick
        owner = run["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"]) == ("Schedule", "pulse")
    first = found[0]["metadata"]["name"]
    done = eventually(
        lambda: get(cp, namespace, f"workflow/{first}"),
        lambda w: (w.get("status") or {}).get("phase") == "Succeeded",
        30,
        "the first run to succeed",
    )
    assert done["status"]["steps"][-1]["output"] == found[0]["spec"]["input"]
    st = status(cp, namespace, "pulse")
    assert st["schedule"] == "every 2s"
    assert condition(st, "Ready")["status"] == "True"
    assert st["started"] >= 4
    assert parse_time(st["nextScheduleTime"]) > parse_time(st["lastScheduleTime"])
    assert "RunStarted" in {e["reason"] for e in events(cp, namespace, "pulse")}


@pytest.mark.slow
def test_sigkill_across_ticks_starts_each_missed_tick_inside_the_window_once(
    control_plane: ControlPlane, isolated: Isolated
) -> None:
    cp, namespace = control_plane, isolated.namespace
    apply(cp, namespace, QUICK)

    def operator() -> OperatorProcess:
        return isolated.operator("schedule-crash")

    first = operator().start()
    try:
        apply(
            cp,
            namespace,
            schedule("survivor", every="2s", catchupWindow="12s", successfulRunsHistoryLimit=100),
        )
        eventually(lambda: runs(cp, namespace, "survivor"), lambda rs: len(rs) >= 2, 60, "runs")
        first.kill()
        killed_at = datetime.now(UTC)
    finally:
        first.stop()
    before = {r["metadata"]["name"] for r in runs(cp, namespace, "survivor")}
    # Ten ticks and more pass with no operator. The restarted one's first pass comes
    # soon after it is up (the window leaves it up to 12 s): the newest missed ticks are
    # inside the window, the oldest outside.
    time.sleep(20)
    second = operator().start()
    # Up (its liveness probe answers): every tick before this was missed.
    restarted_at = datetime.now(UTC)
    try:
        eventually(
            lambda: status(cp, namespace, "survivor"),
            lambda st: (
                bool(st.get("lastHandledTime"))
                and parse_time(st["lastHandledTime"]) > restarted_at + timedelta(seconds=4)
            ),
            60,
            "the schedule to tick again after the restart",
        )
    finally:
        second.stop()
    # Read once the operator has stopped: status and runs no longer move.
    st = status(cp, namespace, "survivor")
    after = runs(cp, namespace, "survivor")
    reasons = [e for e in events(cp, namespace, "survivor") if e["reason"] == "TickSkipped"]
    created = parse_time(get(cp, namespace, "schedule/survivor")["metadata"]["creationTimestamp"])
    handled = parse_time(st["lastHandledTime"])
    every_tick = []
    for tick in Cadence(interval=2).ticks(created):
        if tick > handled:
            break
        every_tick.append(tick)
    with_runs = {tick_of(r) for r in after}
    # Each tick handled either started exactly one run or was skipped with a reason.
    assert len(after) == len(with_runs) == st["started"]
    assert st["started"] + sum(st["skipped"].values()) == len(every_tick), st
    assert set(st["skipped"]) == {"OutsideCatchupWindow"}
    missed = [t for t in every_tick if killed_at < t < restarted_at]
    caught_up = [t for t in missed if t in with_runs]
    skipped = [t for t in missed if t not in with_runs]
    assert caught_up, "no missed tick inside the window started late"
    assert skipped, "every missed tick started, none was outside the window"
    # The late ones are the newest missed ticks (inside the window), the skipped the oldest.
    assert max(skipped) < min(caught_up)
    for run in after:
        if tick_of(run) in caught_up:
            assert run["metadata"]["name"] not in before
            assert parse_time(run["metadata"]["creationTimestamp"]) >= restarted_at.replace(
                microsecond=0
            )
    assert st["skipped"]["OutsideCatchupWindow"] == len(skipped)
    assert any("catch-up window" in e["message"] for e in reasons), reasons


@pytest.mark.slow
def test_forbid_skips_ticks_while_the_long_run_is_active(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, LONG)
    apply(cp, namespace, schedule("solo", every="2s", concurrencyPolicy="Forbid",
                                  templateRef={"name": "long"}, input=None))  # fmt: skip
    st = eventually(
        lambda: status(cp, namespace, "solo"),
        lambda s: (s.get("skipped") or {}).get("Forbid", 0) >= 3,
        60,
        "three ticks skipped by Forbid",
    )
    found = runs(cp, namespace, "solo")
    assert len(found) == 1 and st["started"] == 1
    assert [a["name"] for a in st["active"]] == [found[0]["metadata"]["name"]]
    assert st["activeCount"] == 1
    skips = [e for e in events(cp, namespace, "solo") if e["reason"] == "TickSkipped"]
    assert any("Forbid" in e["message"] for e in skips), skips


@pytest.mark.slow
def test_replace_cancels_the_active_run_when_the_next_tick_starts(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, LONG)
    apply(cp, namespace, schedule("relay", every="3s", concurrencyPolicy="Replace",
                                  templateRef={"name": "long"}, input=None,
                                  failedRunsHistoryLimit=100))  # fmt: skip
    found = eventually(lambda: runs(cp, namespace, "relay"), lambda rs: len(rs) >= 2, 60, "runs")
    replaced = found[0]["metadata"]["name"]
    eventually(
        lambda: get(cp, namespace, f"workflow/{replaced}"),
        lambda w: (w.get("status") or {}).get("phase") == "Cancelled",
        60,
        "the replaced run to be cancelled",
    )
    # At most one run is active at a time (the newest), once the older ones wound down.
    st = eventually(
        lambda: status(cp, namespace, "relay"),
        lambda s: s.get("activeCount") == 1,
        30,
        "one active run",
    )
    newest = runs(cp, namespace, "relay")[-1]["metadata"]["name"]
    assert [a["name"] for a in st["active"]] in (
        [newest],
        [runs(cp, namespace, "relay")[-2]["metadata"]["name"]],
    )
    assert "RunReplaced" in {e["reason"] for e in events(cp, namespace, "relay")}


@pytest.mark.slow
def test_history_limits_delete_the_oldest_finished_runs(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, QUICK)
    apply(cp, namespace, schedule("tidy", every="2s", successfulRunsHistoryLimit=2))
    first = eventually(lambda: runs(cp, namespace, "tidy"), bool, 30, "a run")[0]
    eventually(
        lambda: status(cp, namespace, "tidy"),
        lambda s: (s.get("started") or 0) >= 6,
        60,
        "six runs started",
    )

    # Stop ticking: the runs that exist finish, and the passes that go on prune them.
    cp.kubectl("patch", "-n", namespace, "schedule/tidy", "--type=merge",
               "-p", '{"spec":{"suspend":true}}')  # fmt: skip

    def kept() -> list[dict[str, Any]]:
        """The runs not deleted (nor being deleted: the run's finalizer is its own)."""
        return [
            r for r in runs(cp, namespace, "tidy") if not r["metadata"].get("deletionTimestamp")
        ]

    final = eventually(
        kept,
        lambda rs: bool(rs) and all((r.get("status") or {}).get("phase") == "Succeeded"
                                    for r in rs) and len(rs) <= 2,
        90,
        "the finished runs beyond the limit to be deleted",
    )  # fmt: skip
    assert len(final) == 2
    st = status(cp, namespace, "tidy")
    newest = sorted(tick_of(r) for r in runs(cp, namespace, "tidy"))[-2:]
    assert [tick_of(r) for r in final] == newest
    assert tick_of(first) not in newest and st["started"] >= 6


@pytest.mark.slow
def test_suspend_stops_ticks_and_resume_does_not_replay_them(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, QUICK)
    apply(cp, namespace, schedule("pausable", every="2s", catchupWindow="1h",
                                  successfulRunsHistoryLimit=100))  # fmt: skip
    eventually(lambda: runs(cp, namespace, "pausable"), bool, 30, "a run")
    cp.kubectl("patch", "-n", namespace, "schedule/pausable", "--type=merge",
               "-p", '{"spec":{"suspend":true}}')  # fmt: skip
    st = eventually(
        lambda: status(cp, namespace, "pausable"),
        lambda s: condition(s, "Suspended").get("status") == "True",
        30,
        "the schedule to say it is suspended",
    )
    suspended_at = parse_time(condition(st, "Suspended")["lastTransitionTime"])
    count = len(runs(cp, namespace, "pausable"))
    eventually(
        lambda: status(cp, namespace, "pausable"),
        lambda s: (s.get("skipped") or {}).get("Suspended", 0) >= 3,
        30,
        "three ticks skipped while suspended",
    )
    assert len(runs(cp, namespace, "pausable")) == count
    resumed_at = datetime.now(UTC)
    cp.kubectl("patch", "-n", namespace, "schedule/pausable", "--type=merge",
               "-p", '{"spec":{"suspend":false}}')  # fmt: skip
    eventually(
        lambda: runs(cp, namespace, "pausable"), lambda rs: len(rs) >= count + 2, 30, "new runs"
    )
    # The ticks that passed while suspended (inside the 1h catch-up window) never started.
    replayed = [
        r["metadata"]["name"]
        for r in runs(cp, namespace, "pausable")
        if suspended_at + timedelta(seconds=1) < tick_of(r) < resumed_at
    ]
    assert replayed == []
    assert condition(status(cp, namespace, "pausable"), "Suspended")["status"] == "False"


def test_an_unknown_zone_is_invalid_with_its_field_and_a_missing_template_waits(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, schedule("martian", cron="0 * * * *", timeZone="Mars/Olympus_Mons"))
    st = eventually(
        lambda: status(cp, namespace, "martian"),
        lambda s: condition(s, "Ready").get("reason") == "Invalid",
        30,
        "the schedule to be Invalid",
    )
    assert condition(st, "Ready")["status"] == "False"
    assert st["message"].startswith("spec.timeZone: unknown time zone 'Mars/Olympus_Mons'")

    apply(cp, namespace, schedule("early", every="2s", templateRef={"name": "later"}))
    st = eventually(
        lambda: status(cp, namespace, "early"),
        lambda s: condition(s, "Ready").get("reason") == "TemplateNotFound",
        30,
        "the schedule to wait for its template",
    )
    assert "spec.templateRef: WorkflowTemplate 'later' does not exist" in st["message"]
    assert runs(cp, namespace, "early") == []
    apply(cp, namespace, {**QUICK, "metadata": {"name": "later"}})
    eventually(lambda: runs(cp, namespace, "early"), bool, 40, "runs once the template exists")
    eventually(
        lambda: status(cp, namespace, "early"),
        lambda s: condition(s, "Ready").get("status") == "True",
        30,
        "the schedule to be Ready",
    )


def test_the_api_server_refuses_schedules_its_rules_can_judge(
    control_plane: ControlPlane, namespace: str
) -> None:
    cp = control_plane

    def message(**spec: Any) -> str:
        return refused(cp, namespace, json.dumps(schedule("bad", **spec)))

    assert "exactly one of spec.cron or spec.every" in message(cron="@daily", every="1h")
    assert "exactly one of spec.cron or spec.every" in message()
    assert "cron must be 5 fields" in message(cron="30 2 *")
    assert "every must be a duration of at least 1s" in message(every="500ms")
    assert "every must be a duration of at least 1s" in message(every="soon")
    assert "must be a duration" in message(every="1m", jitter="a bit")
    assert "Unsupported value" in message(every="1m", concurrencyPolicy="Sometimes")
    assert "timeZone applies to cron only" in message(every="1m", timeZone="Europe/Berlin")
    assert "templateRef" in refused(
        cp, namespace, json.dumps({**schedule("bad", every="1m"), "spec": {"every": "1m"}})
    )


def test_trigger_starts_one_run_now_and_backfill_starts_each_tick_once(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    apply(cp, namespace, QUICK)
    apply(cp, namespace, schedule("hourly", cron="0 * * * *", successfulRunsHistoryLimit=100))
    triggered = cli(cp, "schedule", "trigger", "schedule/hourly", "-n", namespace)
    assert triggered.returncode == 0, triggered.stderr
    (manual,) = runs(cp, namespace, "hourly")
    assert "-manual-" in manual["metadata"]["name"]
    assert manual["metadata"]["labels"]["kurable.dev/trigger"] == "manual"
    eventually(
        lambda: get(cp, namespace, f"workflow/{manual['metadata']['name']}"),
        lambda w: (w.get("status") or {}).get("phase") == "Succeeded",
        30,
        "the triggered run to succeed",
    )

    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start, end = now - timedelta(hours=3), now - timedelta(hours=1)
    span = ("--from", start.isoformat(), "--to", end.isoformat())
    backfilled = cli(cp, "schedule", "backfill", "schedule/hourly", *span, "-n", namespace)
    assert backfilled.returncode == 0, backfilled.stderr
    assert results(backfilled.stdout) == ["started"] * 3, backfilled.stdout
    again = cli(cp, "schedule", "backfill", "schedule/hourly", *span, "-n", namespace)
    assert again.returncode == 0, again.stderr
    assert results(again.stdout) == ["exists"] * 3, again.stdout
    # The same rows as data: -o json and -o yaml (kubectl's flags, on every command).
    as_json = cli(
        cp, "schedule", "backfill", "schedule/hourly", *span, "-n", namespace, "-o", "json"
    )
    assert [row["result"] for row in json.loads(as_json.stdout)] == ["exists"] * 3
    as_yaml = cli(
        cp, "schedule", "backfill", "schedule/hourly", *span, "-n", namespace, "-o", "yaml"
    )
    assert [row["run"] for row in yaml.safe_load(as_yaml.stdout)] == [
        row["run"] for row in json.loads(as_json.stdout)
    ]
    ticks = sorted(tick_of(r) for r in runs(cp, namespace, "hourly") if r is not manual)
    wanted = [start, start + timedelta(hours=1), end]
    assert [t for t in ticks if t in wanted] == wanted
    assert len(runs(cp, namespace, "hourly")) == 4

    wrong = cli(cp, "schedule", "backfill", "schedule/hourly", "--from", "yesterday",
                "--to", end.isoformat(), "-n", namespace)  # fmt: skip
    assert wrong.returncode == 2 and "--from 'yesterday' is not a time" in wrong.stderr


def test_the_schedule_example_ticks_at_0230_berlin_and_its_trigger_runs_the_template(
    control_plane: ControlPlane, operator: OperatorProcess, namespace: str
) -> None:
    cp = control_plane
    for path in sorted((ROOT / "examples" / "schedule").glob("*.yaml")):
        apply(cp, namespace, path)
    st = eventually(
        lambda: status(cp, namespace, "nightly-settlement"),
        lambda s: bool(s.get("nextScheduleTime")),
        30,
        "the example schedule to be Ready",
    )
    assert condition(st, "Ready")["status"] == "True"
    assert st["schedule"] == "30 2 * * * in Europe/Berlin"
    berlin = parse_time(st["nextScheduleTime"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert berlin.strftime("%H:%M") in ("02:30", "03:00")  # 03:00 on a spring-forward night
    columns = cp.kubectl("get", "schedules", "-n", namespace).stdout.splitlines()[0].split()
    assert columns == ["NAME", "SCHEDULE", "SUSPENDED", "LAST", "NEXT", "ACTIVE", "AGE"]
    triggered = cli(cp, "schedule", "trigger", "schedule/nightly-settlement", "-n", namespace)
    assert triggered.returncode == 0, triggered.stderr
    (run,) = runs(cp, namespace, "nightly-settlement")
    done = eventually(
        lambda: get(cp, namespace, f"workflow/{run['metadata']['name']}"),
        lambda w: (w.get("status") or {}).get("phase") == "Succeeded",
        30,
        "the triggered run to succeed",
    )
    assert done["status"]["output"] == {
        "settled": run["metadata"]["annotations"][SCHEDULED_TIME_ANNOTATION],
        "by": "nightly-settlement",
    }
