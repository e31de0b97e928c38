"""Operator-wide kopf bindings: kopf's settings, the executor's start and stop, the
liveness probe.

`kurable operator` hands the operator's settings to kopf in its memo
(`OperatorMemo.settings`); startup makes the executor (kurable.executor) from them and
keeps it in the memo (`OperatorMemo.executor`) for every handler.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import kopf

from kurable.api.v1alpha1 import WORKFLOW
from kurable.engine.messages import one_line
from kurable.executor.process import Executor
from kurable.executor.runtime import REPORTING_COMPONENT
from kurable.executor.settings import OperatorSettings
from kurable.store.etcd import EtcdAuthError, EtcdConfigError, EtcdTLSError

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
    # for all annotations together), and a copy in status doubles the object: keep
    # digests in status, all the change detection our handlers need.
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(
        field="status.kopf.diff", event_only=[WORKFLOW.kind]
    )
    settings.persistence.progress_storage = BoundedProgressStorage(field="status.kopf.progress")
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
    settings.posting.reporting_component = REPORTING_COMPONENT
    settings.posting.reporting_instance = ours.reporting_instance
    settings.execution.max_workers = 4
    logging.getLogger("kopf.objects").addFilter(_quiet_wakeups)
    logging.getLogger("kopf.objects").addFilter(_quiet_expected_waits)
    logging.getLogger("aiohttp.server").addFilter(_quiet_failed_probes)
    try:
        memo.executor = await Executor.start(ours, event_queue=_kopf_event)
    except (EtcdTLSError, EtcdAuthError, EtcdConfigError) as e:
        # A refused certificate or password is no outage: retrying cannot help. Stop,
        # saying what to fix (the pod restarts and shows it in its log).
        raise kopf.PermanentError(str(e)) from e


@kopf.on.cleanup()
async def close(memo: OperatorMemo, **_: Any) -> None:
    if "executor" in memo:
        await memo.executor.stop()


@kopf.on.probe(id="resync")
async def watch_health(memo: OperatorMemo, **_: Any) -> dict[str, Any]:
    """Fail the liveness probe while the watch looks silent (kopf answers 500). The
    report also counts the runs `driven` by a task now and the `passive` ones (parked:
    waiting with no task), with their `timers`, and finished runs awaiting `expiries`."""
    if "executor" not in memo:
        return {}
    executor = memo.executor
    resync = executor.resync
    if resync is None:
        return executor.runs.report()
    report = {**resync.report(), **executor.runs.report()}
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


class DigestDiffBaseStorage(kopf.StatusDiffBaseStorage):
    """kopf's diff base as digests: `{"spec": "sha256:…", "metadata": {"labels": "sha256:…",
    "annotations": "sha256:…"}}`, about 250 bytes in `status.kopf.diff` whatever the
    object's size.

    kopf compares the stored essence with the current one to find changes, and hands the
    difference to change handlers as `old`, `new` and `diff`. Kurable's handlers only
    need to know *that* the spec changed (`@kopf.on.update(..., field="spec")`, which
    matches a changed `spec` digest); none reads `old`, `new` or `diff`. A diff base of
    the older, whole-spec form is read as its digests, so an upgrade triggers no update
    handler.

    kopf builds and reads the diff base on every event of every kind, also of kinds with
    no change handler, which never use it: for those (`event_only`, kinds bound only to
    `@kopf.on.event`: Workflows) the essence is empty, sparing a deep copy and three
    digests per event."""

    def __init__(self, *, field: str, event_only: Iterable[str] = ()) -> None:
        super().__init__(field=field)
        self.event_only = frozenset(event_only)

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        if body.get("kind") in self.event_only:
            return kopf.BodyEssence()
        essence: kopf.BodyEssence = _digested(super().build(body=body, extra_fields=extra_fields))
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if body.get("kind") in self.event_only:
            return kopf.BodyEssence()
        essence: kopf.BodyEssence | None = super().fetch(body=body)
        return None if essence is None else _digested(essence)


class BoundedProgressStorage(kopf.StatusProgressStorage):
    """kopf's per-handler progress in `status.kopf.progress` (while a handler retries),
    with its `message` (the last error's text) cut to `MESSAGE_LIMIT` characters, so that
    the bookkeeping stays small whatever an error quotes. The whole message is in the
    operator's log and in the handler's own status condition."""

    MESSAGE_LIMIT = 200

    def store(
        self, *, key: Any, record: kopf.ProgressRecord, body: kopf.Body, patch: kopf.Patch
    ) -> None:
        message = record.get("message")
        if message is not None and len(message) > self.MESSAGE_LIMIT:
            record = {**record, "message": one_line(message, self.MESSAGE_LIMIT)}
        super().store(key=key, record=record, body=body, patch=patch)


def _digested(essence: Mapping[str, Any]) -> Any:
    """`essence` with each of its values (metadata: each of its fields) replaced by the
    SHA-256 of its canonical JSON; a value that already is a digest is kept."""

    def digest(value: Any) -> str:
        if isinstance(value, str) and value.startswith("sha256:"):
            return value
        text = json.dumps(value, sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    digested: dict[str, Any] = {}
    for key, value in essence.items():
        if key == "metadata" and isinstance(value, Mapping):
            digested[key] = {field: digest(part) for field, part in value.items()}
        else:
            digested[key] = digest(value)
    return digested


class _Backoffs:
    """Endless retry delays (seconds), fresh for every request: 1, 1, 2, 3, 5, then 10."""

    def __iter__(self) -> Iterator[float]:
        yield from (1, 1, 2, 3, 5)
        yield from itertools.repeat(10)


def _quiet_wakeups(record: logging.LogRecord) -> bool:
    """Drop kopf's per-event success lines of the `observe` and `wake_schedule` handlers
    (one per watch event)."""
    message = record.getMessage()
    return (
        "Handler 'observe' succeeded" not in message
        and "Handler 'wake_schedule' succeeded" not in message
    )


def _quiet_expected_waits(record: logging.LogRecord) -> bool:
    """Drop kopf's `Handler 'x' failed temporarily: waiting: ...` line of an ExpectedWait."""
    return f"failed temporarily: {ExpectedWait.MARK}" not in record.getMessage()


def _quiet_failed_probes(record: logging.LogRecord) -> bool:
    """Drop aiohttp's traceback of a failing liveness probe: kopf logs the probe's error
    already, in one line, and a probe fails every few seconds while the watch is silent."""
    error = record.exc_info[1] if record.exc_info else None
    return type(error).__name__ != "ActivityError"
