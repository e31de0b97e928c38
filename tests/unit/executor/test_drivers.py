"""One task drives a run in a process, whether kopf's daemon or resync asked first."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from kurable.executor.actions import RunRef
from kurable.executor.runs import Run, run_drivers
from kurable.executor.runtime import Runtime

REF = RunRef("wf", "ns", "uid-1")
LOG = logging.getLogger("test")


def body(version: str, **annotations: str) -> dict[str, Any]:
    meta = {"uid": REF.uid, "name": REF.name, "namespace": REF.namespace}
    return {"metadata": {**meta, "resourceVersion": version, "annotations": annotations}}


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Runs "drive" until the gate opens (no etcd, no API server)."""
    opened = asyncio.Event()

    async def drive(self: Run) -> None:
        await opened.wait()

    monkeypatch.setattr(Run, "drive", drive)
    return opened


def runtime() -> Runtime:
    return Runtime(None, None, None, None, None)  # type: ignore[arg-type]  # wake-ups only


async def test_a_daemon_takes_over_the_run_resync_adopted(gate: asyncio.Event) -> None:
    rt = runtime()
    drivers = run_drivers(rt)
    adopted = drivers.drive(body("1"), REF, LOG, daemon=False)
    assert drivers.adopted() == {REF.uid}

    live = body("2")
    taken = drivers.drive(live, REF, LOG, daemon=True)
    assert taken is adopted  # no second task
    assert taken.daemon and drivers.adopted() == set() and drivers.uids() == {REF.uid}
    assert taken.driven.object is live  # from now on, kopf's live body

    gate.set()
    await taken.task
    await asyncio.sleep(0)
    assert drivers.uids() == set() and drivers.get(REF.uid) is None


async def test_resync_does_not_start_a_second_task_beside_a_daemon(gate: asyncio.Event) -> None:
    rt = runtime()
    drivers = run_drivers(rt)
    daemon = drivers.drive(body("1"), REF, LOG, daemon=True)
    again = drivers.drive(body("1"), REF, LOG, daemon=False)
    assert again is daemon and again.daemon
    assert drivers.adopted() == set()
    gate.set()
    await daemon.task


async def test_a_finished_run_can_be_driven_again(gate: asyncio.Event) -> None:
    rt = runtime()
    drivers = run_drivers(rt)
    gate.set()
    first = drivers.drive(body("1"), REF, LOG, daemon=True)
    await first.task
    second = drivers.drive(body("1"), REF, LOG, daemon=False)
    assert second is not first
    await second.task


async def test_stopping_cancels_the_task_and_forgets_it(gate: asyncio.Event) -> None:
    rt = runtime()
    drivers = run_drivers(rt)
    driver = drivers.drive(body("1"), REF, LOG, daemon=False)
    await asyncio.sleep(0)
    await drivers.stop(REF.uid)
    assert driver.task.cancelled()
    await asyncio.sleep(0)
    assert drivers.uids() == set()
    assert rt.wakeups == {}  # the run's wake-up event was unsubscribed


async def test_a_listed_object_newer_than_the_watched_body_is_used_until_the_watch_moves(
    gate: asyncio.Event,
) -> None:
    class Watched(dict[str, Any]):
        """Stands for kopf's live body, which its watch updates in place."""

    rt = runtime()
    drivers = run_drivers(rt)
    watched = Watched(body("1"))
    run = drivers.drive(watched, REF, LOG, daemon=True).driven

    listed = body("2", **{"kurable.dev/signal.GO": "{}"})
    run.refresh(listed, body_version="1")
    assert run.object is listed and run.wakeup.is_set()
    run.refresh(body("0"), body_version="3")  # the watch delivered during that listing
    assert run.object is listed

    watched.update(body("3"))  # the watch delivers again: its body is the newer one
    assert run.object is watched
    gate.set()
    await drivers.stop_all()
