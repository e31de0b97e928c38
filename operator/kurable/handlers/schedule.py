"""Schedule bindings: kopf's daemon per Schedule hands it to the executor's driver.

The driver (kurable.executor.schedules) is the loop; this module only binds kopf's
events to it: the daemon starts it (also when the operator starts: that is the whole of
crash recovery), and any change of the Schedule wakes it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kurable.api.v1alpha1 import GROUP, SCHEDULE, VERSION
from kurable.executor.actions import RunRef

from .operator import OperatorMemo

OWNERSHIP_POLL_SECONDS = 5.0
"""How often the daemon of a Schedule another replica owns asks whether it owns it now."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.event(GROUP, VERSION, SCHEDULE.plural)
async def wake_schedule(uid: str, memo: OperatorMemo, **_: Any) -> None:
    """A change of the spec (suspend, cron, template) is acted on at once."""
    if "executor" in memo:
        memo.executor.runtime.wake(uid)


@kopf.daemon(GROUP, VERSION, SCHEDULE.plural, cancellation_timeout=2.0, backoff=5.0)
async def tick(
    body: kopf.Body,
    uid: str,
    name: str,
    namespace: str | None,
    memo: OperatorMemo,
    logger: Logger,
    **_: Any,
) -> None:
    """Start the Schedule's runs tick after tick (until it is deleted or the operator stops).

    With replicas sharing the work, only the replica that owns the Schedule drives it; the
    daemons of the others look again every `OWNERSHIP_POLL_SECONDS`, and so does the
    owner's once a change of the members took the Schedule away from it."""
    assert namespace is not None, "Schedules are namespaced"
    while True:
        task = memo.executor.schedules.drive(body, RunRef(name, namespace, uid), logger)
        if task is not None:
            # Not `await task`: its cancellation by `disown` must not end this daemon.
            await asyncio.wait({task})
            if not task.cancelled():
                task.result()  # a failure reaches kopf, which starts the daemon again
                return
        await asyncio.sleep(OWNERSHIP_POLL_SECONDS)
