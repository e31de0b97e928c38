"""Workflow bindings: kopf's watch events drive the runs; a deletion forgets the journal.

Only `@kopf.on.event` is bound for Workflows: no daemon and no change-detecting handler,
so kopf keeps no task per run and writes nothing to them (no finalizer, no diff base,
no progress in status). kopf's initial listing delivers every Workflow when the
operator starts, which is the whole of crash recovery; the executor
(kurable.executor.drivers) drives a run while it acts and parks it while it waits.

A Workflow deleted while the operator runs is forgotten when its DELETED event comes;
one deleted while no operator watched (or whose event was lost) is forgotten by resync
(kurable.executor.resync). Workflows of an older version still carry the finalizer
`kurable.dev/finalizer`: kopf removes it from each on its first event, as no handler
needs it any more, so their deletion never hangs.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kurable.api.v1alpha1 import GROUP, VERSION, WORKFLOW
from kurable.engine.messages import counted
from kurable.executor.actions import RunRef

from .operator import OperatorMemo

Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.event(GROUP, VERSION, WORKFLOW.plural)
async def observe(
    uid: str,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    type: str | None,
    memo: OperatorMemo,
    logger: Logger,
    **_: Any,
) -> None:
    """Any change (a new run, spec flags, signals, a child's status) may move a run on;
    a deletion forgets its journal."""
    if "executor" not in memo:
        return
    assert namespace is not None, "Workflows are namespaced"
    executor = memo.executor
    meta = body.get("metadata", {})
    if executor.resync is not None:
        executor.resync.delivered(uid, meta.get("resourceVersion", ""), type)
    if type == "DELETED":
        await executor.runs.forget(uid)
        deleted = await executor.runtime.journal.forget(uid)
        logger.info(f"removed the journal ({counted(deleted, 'key')})")
    else:
        await executor.runs.observe(body, RunRef(name, namespace, uid), logger)
    for owner in meta.get("ownerReferences") or []:
        if owner.get("uid"):
            executor.runs.wake(owner["uid"])
