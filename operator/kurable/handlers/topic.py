"""Topic bindings: a timer trims each Topic by its retention and projects its status, on
the replica that owns it; a deletion forgets its messages (the finalizer waits)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kurable.api.v1alpha1 import GROUP, TOPIC, VERSION
from kurable.executor.topics import keep_topic
from kurable.store import topics as store

from .operator import OperatorMemo

KEEP_SECONDS = 10.0
"""How often a Topic is trimmed and its status refreshed."""

Logger = logging.Logger | logging.LoggerAdapter[Any]


@kopf.on.create(GROUP, VERSION, TOPIC.plural)
@kopf.on.update(GROUP, VERSION, TOPIC.plural, field="spec")
async def check_topic(body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    """Validate the definition (status Ready or Invalid) as soon as it is applied."""
    await keep_topic(memo.executor.runtime, body)


@kopf.timer(GROUP, VERSION, TOPIC.plural, interval=KEEP_SECONDS, initial_delay=KEEP_SECONDS)
async def keep(body: kopf.Body, uid: str, memo: OperatorMemo, **_: Any) -> None:
    """Trim by retention and refresh status (the replica owning the Topic only)."""
    if memo.executor.runtime.shards.owns(uid):
        await keep_topic(memo.executor.runtime, body)


@kopf.on.delete(GROUP, VERSION, TOPIC.plural)
async def forget_topic(
    name: str, namespace: str | None, memo: OperatorMemo, logger: Logger, **_: Any
) -> None:
    """Deleting a Topic deletes its messages."""
    assert namespace is not None
    runtime = memo.executor.runtime
    deleted = await store.forget(runtime.etcd, runtime.prefix, namespace, name)
    logger.info(f"removed the topic's messages ({deleted} keys)")
