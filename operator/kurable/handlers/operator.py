"""Operator-wide kopf bindings: kopf's settings, the executor's start and stop, the
liveness probe.

`kurable operator` hands the operator's settings to kopf in its memo
(`OperatorMemo.settings`); startup makes the executor (kurable.executor) from them and
keeps it in the memo (`OperatorMemo.executor`) for every handler.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import kopf

from kurable.executor.process import Executor
from kurable.executor.settings import OperatorSettings

FINALIZER = "kurable.dev/finalizer"


class ExpectedWait(kopf.TemporaryError):
    """A handler waiting for something users do (delete an EntityType's Entities, create
    a missing EntityType): kopf retries it after `delay` seconds, like any TemporaryError,
    but it is no failure: kopf's ERROR line (and Error Event) for it is dropped. The
    handler says why it waits once, with an Info or Warning Event and a status condition."""

    MARK = "waiting: "

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(self.MARK + message, delay=delay)


class OperatorMemo(kopf.Memo):
    """kopf's memo for Kurable's handlers (kopf copies it for each object, shallowly)."""

    settings: OperatorSettings
    """Set by `kurable operator` before kopf starts."""
    executor: Executor
    """Set at startup (`configure`), for every handler."""


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: OperatorMemo, **_: Any) -> None:
    """Keep kopf's bookkeeping in status and its watches healthy; connect to etcd; start
    resync. Without `memo.settings` (kopf started otherwise than by `kurable operator`),
    the defaults of OperatorSettings apply."""
    if "settings" not in memo:
        memo.settings = OperatorSettings()
    ours = memo.settings
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
    settings.networking.request_timeout = ours.api_timeout
    settings.networking.connect_timeout = ours.api_timeout
    settings.watching.chunk_size = 2000
    settings.posting.level = logging.INFO
    settings.execution.max_workers = 4
    logging.getLogger("kopf.objects").addFilter(_quiet_wakeups)
    logging.getLogger("kopf.objects").addFilter(_quiet_expected_waits)
    logging.getLogger("aiohttp.server").addFilter(_quiet_failed_probes)
    memo.executor = await Executor.start(ours, event_queue=_kopf_event)


@kopf.on.cleanup()
async def close(memo: OperatorMemo, **_: Any) -> None:
    if "executor" in memo:
        await memo.executor.stop()


@kopf.on.probe(id="resync")
async def watch_health(memo: OperatorMemo, **_: Any) -> dict[str, Any]:
    """Fail the liveness probe while the watch looks silent (kopf answers 500)."""
    resync = memo.executor.resync if "executor" in memo else None
    if resync is None:
        return {}
    report = resync.report()
    if report["watch"] == "silent":
        missed = next(iter(resync.missed.values()), None)
        raise kopf.PermanentError(
            f"the watch looks silent for {report['silentSeconds']}s"
            + (f": {missed.describe()}" if missed else "")
            + f"; {report}"
        )
    return report


def _kopf_event(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> bool:
    """Queue an Event through kopf's poster; False outside kopf's handlers' context (a
    task resync started), where kopf's queue is unknown."""
    body: Any = obj  # kopf's Body or a listed object: kopf reads its metadata only
    try:
        if type_ == "Warning":
            kopf.warn(body, reason=reason, message=message)
        else:
            kopf.info(body, reason=reason, message=message)
    except LookupError:
        return False
    return True


class _Backoffs:
    """Endless retry delays (seconds), fresh for every request: 1, 1, 2, 3, 5, then 10."""

    def __iter__(self) -> Iterator[float]:
        yield from (1, 1, 2, 3, 5)
        yield from itertools.repeat(10)


def _quiet_wakeups(record: logging.LogRecord) -> bool:
    """Drop kopf's per-event success line of the `wake` handler (one per watch event)."""
    return "Handler 'wake' succeeded" not in record.getMessage()


def _quiet_expected_waits(record: logging.LogRecord) -> bool:
    """Drop kopf's `Handler 'x' failed temporarily: waiting: ...` line of an ExpectedWait."""
    return f"failed temporarily: {ExpectedWait.MARK}" not in record.getMessage()


def _quiet_failed_probes(record: logging.LogRecord) -> bool:
    """Drop aiohttp's traceback of a failing liveness probe: kopf logs the probe's error
    already, in one line, and a probe fails every few seconds while the watch is silent."""
    error = record.exc_info[1] if record.exc_info else None
    return type(error).__name__ != "ActivityError"
