"""Workflow bindings: kopf's daemon per unfinished run, wake-ups, deletion.

The run itself is driven by the executor (kurable.executor.runs): kopf starts a
daemon for every Workflow when the operator starts, which is the whole of crash
recovery, and the daemon hands the run to the executor's one task for it.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kurable.api.v1alpha1 import GROUP, VERSION, WORKFLOW
from kurable.engine.journal import TERMINAL_PHASES, parse_time
from kurable.executor.actions import RunRef
from kurable.executor.runs import expire

from .operator import OperatorMemo

Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.event(GROUP, VERSION, WORKFLOW.plural)
async def wake(uid: str, body: kopf.Body, type: str | None, memo: OperatorMemo, **_: Any) -> None:
    """Any change (spec flags, signals, a child's status) may unblock a waiting run."""
    if "executor" not in memo:
        return
    executor = memo.executor
    if executor.resync is not None:
        executor.resync.delivered(uid, body.get("metadata", {}).get("resourceVersion", ""), type)
    owners = [o.get("uid") for o in body.get("metadata", {}).get("ownerReferences") or []]
    for target in (uid, *owners):
        executor.runtime.wake(target)


# No `when=` filter on the phase: kopf would stop the daemon the moment its own final
# status patch lands, racing the fence release. A finished run's daemon returns at once.
# `backoff` is only the safety net: Run.drive itself outlasts etcd and API outages.
@kopf.daemon(GROUP, VERSION, WORKFLOW.plural, cancellation_timeout=2.0, backoff=5.0)
async def execute(
    body: kopf.Body,
    uid: str,
    name: str,
    namespace: str | None,
    memo: OperatorMemo,
    logger: Logger,
    **_: Any,
) -> None:
    """Run a workflow to its end (or until the daemon is stopped)."""
    assert namespace is not None, "Workflows are namespaced"
    executor = memo.executor
    finished_at = body.get("status", {}).get("finishedAt")
    if body.get("status", {}).get("phase") not in TERMINAL_PHASES:
        # Status is projected from the journal: a terminal status means a finished journal.
        # If resync adopted the run already, this daemon takes that task over: stopping
        # the daemon (deletion, shutdown) then stops it, as if the daemon had started it.
        driver = executor.runs.drive(body, RunRef(name, namespace, uid), logger, daemon=True)
        await driver.task
        finished_at = driver.driven.state.finished_at
    ttl = body.get("spec", {}).get("ttlSecondsAfterFinished")
    if ttl is not None and finished_at:
        at = parse_time(finished_at).timestamp() + ttl
        await expire(executor.runtime, namespace, name, at)


@kopf.on.delete(GROUP, VERSION, WORKFLOW.plural)
async def forget(uid: str, memo: OperatorMemo, logger: Logger, **_: Any) -> None:
    """Deleting a Workflow removes its journal (the finalizer waits for this)."""
    executor = memo.executor
    # A driver still running (adopted by resync, or a daemon not yet stopped) would
    # find the journal gone and start the run afresh.
    await executor.runs.stop(uid)
    deleted = await executor.runtime.journal.forget(uid)
    logger.info(f"removed the journal ({deleted} keys)")
