"""Operator-wide setup: kopf settings, the etcd connection, the fence, resync."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator
from typing import Any

import kopf

from kurable.store.journal import EtcdConfig

from ._runtime import API_TIMEOUT, Runtime
from .resync import RESYNC_INTERVAL, Resync
from .workflow import Drivers

FINALIZER = "kurable.dev/finalizer"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Keep kopf's bookkeeping in status and its watches healthy; connect to etcd; start
    resync.

    The memo may carry (from `kurable operator`): `lease_ttl`, `api_timeout`,
    `resync_interval` (0: no resync), `namespaces` (kopf's patterns; empty: cluster-wide)
    and `peering` (whether kopf's peering decides which replica is active).
    """
    # Large specs would overflow the last-handled-configuration annotation (256 KiB
    # for all annotations together); status has room and is declared in the CRDs.
    settings.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(field="status.kopf.diff")
    settings.persistence.progress_storage = kopf.StatusProgressStorage(field="status.kopf.progress")
    settings.persistence.finalizer = FINALIZER
    # Watches that hang silently are the most common way operators stop reacting:
    # let the server end each watch regularly, and never wait forever on a socket.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    # kopf gives up on the API server after 8 retries (~1 min), which ends its watches:
    # keep retrying for as long as an outage lasts.
    settings.networking.error_backoffs = _Backoffs()
    # A request sent on a pooled keep-alive connection that went silent would wait
    # kopf's default of 5 minutes: fail it sooner, and let kopf retry on a new
    # connection. Listing in pages keeps each request short even in a big namespace;
    # pages of 500 cost 0.5 s of recovery at 1,000 runs (bench/recovery.py), 2000 do not.
    api_timeout = float(memo.get("api_timeout", API_TIMEOUT))
    settings.networking.request_timeout = api_timeout
    settings.networking.connect_timeout = api_timeout
    settings.watching.chunk_size = 2000
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 4
    logging.getLogger("kopf.objects").addFilter(_quiet_wakeups)
    logging.getLogger("aiohttp.server").addFilter(_quiet_failed_probes)
    config = EtcdConfig.from_env()
    runtime = await Runtime.open(
        config,
        lease_ttl=int(memo.get("lease_ttl", 10)),
        executor=os.environ.get("KURABLE_EXECUTOR_ID") or None,
        api_timeout=api_timeout,
    )
    memo["runtime"] = runtime
    memo["drivers"] = drivers = Drivers()
    interval = float(memo.get("resync_interval", RESYNC_INTERVAL))
    if interval > 0:
        resync = Resync(
            runtime,
            drivers,
            interval=interval,
            namespaces=list(memo.get("namespaces") or ()),
            adopt=not memo.get("peering"),
        )
        resync.start()
        memo["resync"] = resync


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    resync: Resync | None = memo.get("resync")
    if resync is not None:
        await resync.stop()
    drivers: Drivers | None = memo.get("drivers")
    if drivers is not None:
        await drivers.stop_all()  # runs resync adopted (kopf stopped its daemons)
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.close()


class _Backoffs:
    """Endless retry delays (seconds), fresh for every request: 1, 1, 2, 3, 5, then 10."""

    def __iter__(self) -> Iterator[float]:
        yield from (1, 1, 2, 3, 5)
        yield from itertools.repeat(10)


def _quiet_wakeups(record: logging.LogRecord) -> bool:
    """Drop kopf's per-event success line of the `wake` handler (one per watch event)."""
    return "Handler 'wake' succeeded" not in record.getMessage()


def _quiet_failed_probes(record: logging.LogRecord) -> bool:
    """Drop aiohttp's traceback of a failing liveness probe: kopf logs the probe's error
    already, in one line, and a probe fails every few seconds while the watch is silent."""
    error = record.exc_info[1] if record.exc_info else None
    return type(error).__name__ != "ActivityError"
