"""Consumer bindings: kopf's daemon per Consumer hands it to the executor's driver.

The driver (kurable.executor.consumers) is the loop; this module only binds kopf's events
to it: the daemon starts it (also when the operator starts: that is the whole of crash
recovery, the offset is in etcd), any change of the Consumer wakes it, and a deletion
forgets its offset.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kurable.api.v1alpha1 import CONSUMER, GROUP, VERSION
from kurable.executor.actions import RunRef
from kurable.store import keys

from .operator import OperatorMemo

OWNERSHIP_POLL_SECONDS = 5.0
"""How often the daemon of a Consumer another replica owns asks whether it owns it now."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.event(GROUP, VERSION, CONSUMER.plural)
async def wake_consumer(uid: str, memo: OperatorMemo, **_: Any) -> None:
    """A change of the spec (suspend, startFrom, the action) is acted on at once."""
    if "executor" in memo:
        memo.executor.runtime.wake(uid)


@kopf.daemon(GROUP, VERSION, CONSUMER.plural, cancellation_timeout=2.0, backoff=5.0)
async def consume(
    body: kopf.Body,
    uid: str,
    name: str,
    namespace: str | None,
    memo: OperatorMemo,
    logger: Logger,
    **_: Any,
) -> None:
    """Consume the source (until the Consumer is deleted or the operator stops); only on
    the replica that owns the Consumer (the others look again every
    `OWNERSHIP_POLL_SECONDS`)."""
    assert namespace is not None, "Consumers are namespaced"
    while True:
        task = memo.executor.consumers.drive(body, RunRef(name, namespace, uid), logger)
        if task is not None:
            await asyncio.wait({task})
            if not task.cancelled():
                task.result()
                return
        await asyncio.sleep(OWNERSHIP_POLL_SECONDS)


@kopf.on.delete(GROUP, VERSION, CONSUMER.plural, optional=True)
async def forget_consumer(
    uid: str, namespace: str | None, memo: OperatorMemo, logger: Logger, **_: Any
) -> None:
    """A deleted Consumer's offset goes (best effort: no finalizer holds the deletion; a
    recreated Consumer has a new uid and starts afresh either way)."""
    assert namespace is not None
    runtime = memo.executor.runtime
    await memo.executor.consumers.stop(uid)
    await runtime.etcd.delete_prefix(keys.consumer(runtime.prefix, namespace, uid).encode())
    logger.info("removed the consumer's offset")
