"""A run has one task in a process while it acts, none while it waits (parked), and is
driven again by what may unblock it: a change of its spec or signals, its timer, a child."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import pytest

from kurable.engine.passive import wake_fingerprint
from kurable.executor.actions import RunRef
from kurable.executor.drivers import Drivers, Parked
from kurable.executor.runs import Run, run_drivers
from kurable.executor.runtime import Runtime

REF = RunRef("wf", "ns", "uid-1")
LOG = logging.getLogger("test")


def body(version: str, phase: str | None = None, **annotations: str) -> dict[str, Any]:
    meta = {"uid": REF.uid, "name": REF.name, "namespace": REF.namespace, "generation": 1}
    obj: dict[str, Any] = {
        "metadata": {**meta, "resourceVersion": version, "annotations": annotations},
        "spec": {"ttlSecondsAfterFinished": 0},
    }
    if phase is not None:
        obj["status"] = {"phase": phase, "finishedAt": "2026-01-01T00:00:00Z"}
    return obj


class Script:
    """What each drive of a run does: wait for the gate, then park or finish."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.outcomes: list[str | float] = []
        """"park" (until a change), a float (park until that epoch second), "finish"."""
        self.drives = 0
        self.bodies: list[Mapping[str, Any] | None] = []


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch) -> Script:
    """Runs "drive" as the script says (no etcd, no API server)."""
    s = Script()

    async def drive(self: Run) -> Parked | None:
        s.drives += 1
        s.bodies.append(self._body)
        await s.gate.wait()
        outcome = s.outcomes.pop(0) if s.outcomes else "finish"
        if outcome == "finish":
            self.state = dataclasses.replace(self.state, phase="Succeeded")
            return None
        until = None if outcome == "park" else float(outcome)
        return Parked(self.ref, until, wake_fingerprint(self.object))

    monkeypatch.setattr(Run, "drive", drive)
    return s


def runtime() -> Runtime:
    return Runtime(None, None, None, None, None, None)  # type: ignore[arg-type]  # wake-ups only


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_run_has_one_task_whoever_asks(script: Script) -> None:
    drivers = run_drivers(runtime())
    first = drivers.start(body("1"), REF)
    again = drivers.start(body("2"), REF)
    assert first is not None and again is first
    assert first.driven.body["metadata"]["resourceVersion"] == "2"  # the newer copy
    await drivers.observe(body("3"), REF, LOG)
    assert script.drives <= 1 and drivers.active() == {REF.uid}
    script.gate.set()
    await first.task
    await settle()
    assert drivers.uids() == set() and script.drives == 1


async def test_a_waiting_run_holds_no_task_and_a_signal_drives_it_again(script: Script) -> None:
    drivers = run_drivers(runtime())
    script.outcomes = ["park"]
    script.gate.set()
    driver = drivers.start(body("1"), REF)
    assert driver is not None
    await driver.task
    await settle()
    assert drivers.active() == set() and drivers.parked(REF.uid) is not None
    assert drivers.report()["passive"] == 1 and drivers.report()["driven"] == 0

    # The echo of its own status patch changes nothing that could unblock it.
    await drivers.observe(body("2", phase="Running"), REF, LOG)
    assert drivers.active() == set() and script.drives == 1

    await drivers.observe(body("3", **{"kurable.dev/signal.GO": "{}"}), REF, LOG)
    assert drivers.active() == {REF.uid} and drivers.parked(REF.uid) is None
    again = drivers.get(REF.uid)
    assert again is not None
    await again.task
    assert script.drives == 2 and drivers.report()["woken"] == 1


async def test_a_parked_run_is_driven_again_at_its_time(script: Script) -> None:
    drivers = run_drivers(runtime())
    script.outcomes = [time.time() + 0.05]
    script.gate.set()
    driver = drivers.start(body("1"), REF)
    assert driver is not None
    await driver.task
    await settle()
    assert drivers.report()["timers"] == 1 and drivers.active() == set()
    for _ in range(200):
        if script.drives == 2:
            break
        await asyncio.sleep(0.01)
    assert script.drives == 2
    assert script.bodies[-1] is None  # it reads its object afresh
    await drivers.stop_all()


async def test_a_child_wakes_its_parked_parent(script: Script) -> None:
    drivers = run_drivers(runtime())
    script.outcomes = ["park"]
    script.gate.set()
    driver = drivers.start(body("1"), REF)
    assert driver is not None
    await driver.task
    await settle()
    drivers.wake(REF.uid)
    assert drivers.active() == {REF.uid}
    await drivers.stop_all()


async def test_the_late_echo_of_a_finished_run_does_not_drive_it_again(script: Script) -> None:
    drivers = run_drivers(runtime())
    script.gate.set()
    driver = drivers.start(body("1"), REF)
    assert driver is not None
    await driver.task
    await settle()
    # A status patch written before the end, delivered after it.
    await drivers.observe(body("2", phase="Running"), REF, LOG)
    assert drivers.active() == set() and script.drives == 1


async def test_a_finished_run_with_a_ttl_is_deleted_by_the_one_timer_heap(
    script: Script, monkeypatch: pytest.MonkeyPatch
) -> None:
    deleted: list[RunRef] = []

    async def delete(self: Runtime, kind: Any, namespace: str, name: str, uid: str) -> None:
        deleted.append(RunRef(name, namespace, uid))

    monkeypatch.setattr(Runtime, "delete", delete)
    drivers = run_drivers(runtime())
    await drivers.observe(body("5", phase="Succeeded"), REF, LOG)
    assert script.drives == 0  # a finished run is never driven
    for _ in range(200):
        if deleted:
            break
        await asyncio.sleep(0.01)
    assert deleted == [REF]
    await drivers.stop_all()


async def test_a_run_this_process_does_not_own_is_not_started(script: Script) -> None:
    drivers = run_drivers(runtime())
    drivers.owns = lambda uid: uid != REF.uid
    assert drivers.start(body("1"), REF) is None
    await drivers.observe(body("1"), REF, LOG)
    assert drivers.uids() == set() and script.drives == 0


async def test_stopping_cancels_the_task_and_forgets_it(script: Script) -> None:
    rt = runtime()
    drivers = run_drivers(rt)
    driver = drivers.start(body("1"), REF)
    assert driver is not None
    await asyncio.sleep(0)
    await drivers.stop(REF.uid)
    assert driver.task.cancelled()
    await settle()
    assert drivers.uids() == set()
    assert rt.wakeups == {}  # the run's wake-up event was unsubscribed


async def test_a_deleting_run_is_stopped(script: Script) -> None:
    drivers = run_drivers(runtime())
    driver = drivers.start(body("1"), REF)
    assert driver is not None
    deleting = body("2")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    await drivers.observe(deleting, REF, LOG)
    assert driver.task.cancelled() and drivers.uids() == set()


async def test_a_listed_object_newer_than_the_watched_body_is_used_until_the_watch_moves(
    script: Script,
) -> None:
    drivers = run_drivers(runtime())
    driver = drivers.start(body("1"), REF)
    assert driver is not None
    run = driver.driven
    assert isinstance(run, Run)

    listed = body("2", **{"kurable.dev/signal.GO": "{}"})
    run.refresh(listed, body_version="1")
    assert run.object is listed and run.wakeup.is_set()
    run.refresh(body("0"), body_version="3")  # the watch delivered during that listing
    assert run.object is listed

    watched = body("3")
    run.observe(watched)  # the watch delivers again: its body is the newer one
    assert run.object is watched
    await drivers.stop_all()


async def test_runs_no_longer_owned_are_let_go_driven_or_parked(script: Script) -> None:
    released: list[str] = []

    async def release(uid: str) -> None:
        released.append(uid)

    rt = runtime()
    drivers = Drivers(
        lambda b, ref, logger: Run(rt, b, ref, logger),
        expire=lambda ref: asyncio.sleep(0),
        wake=rt.wake,
        release=release,
    )
    other = RunRef("other", "ns", "uid-2")
    script.outcomes = ["park"]
    script.gate.set()
    parked = drivers.start(body("1"), REF)
    assert parked is not None
    await parked.task
    script.gate.clear()
    acting = drivers.start(body("1"), other)
    assert acting is not None
    await settle()
    assert drivers.parked(REF.uid) is not None and drivers.active() == {other.uid}

    drivers.owns = lambda uid: False  # another member joined and took both
    assert sorted(await drivers.disown()) == sorted([REF.uid, other.uid])
    assert drivers.uids() == set() and acting.task.cancelled()
    assert released == [REF.uid]  # the acting run's task releases its own hold
