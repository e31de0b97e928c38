"""The run driver: a task drives an acting run from its journal.

It is thin: it asks the pure engine what to do next, journals the answer in etcd
(commit protocol of DESIGN.md), performs actions with outside effects
(kurable.executor.actions), and projects status from the journal. It outlasts etcd
and API server outages (back off, resume from the journal) and says `Stalled` in
status when no progress is possible.

A run is driven by one task of this process at most (`run_drivers`), started from
kopf's watch events (kurable.handlers.workflow) or by resync (kurable.executor.resync),
which adopts the runs kopf's watch did not deliver. A run that waits for a signal, a
timer or its spec, with no action in flight, returns from its task (`Parked`) and keeps
its hold; kurable.executor.drivers drives it again when something may unblock it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from kubernetes_asyncio import client as k8s
from pydantic import ValidationError

from kurable.api.v1alpha1 import (
    WORKFLOW,
    WORKFLOW_TEMPLATE,
    WorkflowSpec,
    WorkflowTemplateSpec,
)
from kurable.engine import children, decide, expressions, records, signals, sizes, validate
from kurable.engine import schema as user_schema
from kurable.engine.conditions import same_status, updated_condition
from kurable.engine.journal import (
    Record,
    RunState,
    apply,
    fold,
    now_rfc3339,
    parse_time,
)
from kurable.engine.messages import one_line
from kurable.engine.passive import parks, status_write_delay, wake_fingerprint, wake_time
from kurable.engine.run_changes import run_change, template_of
from kurable.engine.status import project
from kurable.engine.tracecontext import TRACEPARENT_ANNOTATION
from kurable.store.journal import MAX_TXN_RECORDS, Fenced, RunChange, SlotTaken

from . import metrics, tracing
from .actions import Outcome, RunRef, child, perform
from .drivers import Drivers, Logger, Parked
from .errors import describe_error
from .runtime import Runtime

_P = ParamSpec("_P")
_T = TypeVar("_T")

SIGNAL_ATTEMPTS = 3
"""Observations of the object per step when consuming signal annotations races writes."""

PARK_AFTER_SECONDS = 1.0
"""A run that waits at least this long (or for a change outside) returns from its task;
a shorter wait (a quick retry) sleeps in it, sparing a journal read."""


def run_drivers(runtime: Runtime) -> Drivers:
    """The runs this process drives (each by one task at most, while it acts) and parks."""

    async def expire(ref: RunRef) -> None:
        await runtime.delete(WORKFLOW, ref.namespace, ref.name, uid=ref.uid)

    async def hand_over(uid: str) -> None:
        # A parked run another replica owns now is handed to that one (held at once).
        await runtime.fence.release(uid, to=runtime.shards.owner(uid))

    drivers = Drivers(
        lambda body, ref, logger: Run(runtime, body, ref, logger),
        expire=expire,
        wake=runtime.wake,
        release=hand_over if runtime.fence is not None else None,
        owns=runtime.shards.owns if runtime.shards is not None else lambda uid: True,
    )
    metrics.set_in_flight(lambda: drivers.held)
    return drivers


class _Invalid(Exception):
    """The run cannot start; the message says what to fix."""


class _NotYet(Exception):
    """The run cannot start yet (e.g. its template does not exist); retry later."""


class EngineFault(Exception):
    """An exception raised inside the pure engine (deciding, folding the journal,
    projecting status, reading signals): a bug, not an outage. Retrying cannot help, so
    the driver ends the run with reason `InternalError` (`decide.internal_error`)."""

    def __init__(self, doing: str, cause: Exception) -> None:
        super().__init__(f"{doing}: {describe_error(cause)}")
        self.doing = doing
        self.cause = cause


def pure(doing: str, call: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """`call(*args, **kwargs)`, a call into the pure engine: whatever it raises is an
    EngineFault (while `doing`), which the driver does not take for an outage."""
    try:
        return call(*args, **kwargs)
    except Exception as e:
        raise EngineFault(doing, e) from e


class Run:
    """One executor's hold on one run."""

    def __init__(
        self, runtime: Runtime, body: Mapping[str, Any] | None, ref: RunRef, logger: Logger
    ) -> None:
        self.runtime = runtime
        self._body = body
        """The object as the watch delivered it last, or as resync listed it; None until
        read (a parked run woken by its timer or a child)."""
        self.fresh: Mapping[str, Any] | None = None
        """A newer copy of the object, listed by resync while the watch was behind."""
        self.fresh_base = ""
        """The body's resourceVersion when `fresh` was listed."""
        self.ref = ref
        self.logger = logger
        self.records: list[Record] = []
        self.state = RunState()
        self.revision = 0
        self.last_status: dict[str, Any] | None = None
        self.last_patch = time.monotonic()
        """When status was last written, or the run began to be driven here: the first
        write waits for the coalescing window too, so a fast run writes only its end."""
        self.patching = False
        self.wakeup = runtime.wakeup(ref.uid)
        self.acting: dict[str, tuple[asyncio.Task[Outcome], decide.Act]] = {}
        """Actions being performed now (several at once in parallel branches)."""
        self.unpublished: decide.Decision | None = None
        self.publisher: asyncio.Task[None] | None = None

    @property
    def body(self) -> Mapping[str, Any]:
        """The object as the watch delivered it last (or as resync listed it)."""
        return self._body or {}

    @property
    def finished(self) -> bool:
        return self.state.finished

    @property
    def finished_at(self) -> str | None:
        return self.state.finished_at

    @property
    def object(self) -> Mapping[str, Any]:
        """The newest copy of the run's object: what resync listed (or a patch
        returned), until the watch delivers a change (then its body is newer)."""
        if self.fresh is not None and _version(self.body) == self.fresh_base:
            return self.fresh
        return self.body

    def observe(self, body: Mapping[str, Any]) -> None:
        """The watch delivered a newer copy of the object."""
        self._body = body
        self.wakeup.set()

    def refresh(self, listed: Mapping[str, Any], body_version: str) -> None:
        """Resync listed the object; `body_version` is the body's resourceVersion when
        the listing began. A change the watch did not deliver wakes the run up."""
        if _version(self.body) != body_version:
            return  # the watch delivered during the listing: its body may be newer
        if _version(listed) == _version(self.object):
            return
        self.fresh, self.fresh_base = listed, body_version
        self.wakeup.set()

    def close(self) -> None:
        """Stop listening for wake-ups (the run's task has ended)."""
        self.runtime.unsubscribe(self.ref.uid, self.wakeup)

    async def drive(self) -> Parked | None:
        """Hold the run and drive it to its end (None), or until it waits with nothing
        in flight (Parked: the hold is kept, the task ends). Losing the hold (a lease that expired
        while this process was paused or cut off from etcd) is not the end: claim it
        again, re-read the journal (another executor may have moved it on) and go on.
        Nor is an error (etcd or the API server restarting, a network cut): back off,
        then resume from the journal, which holds everything that was committed. An
        exception inside the engine is neither (EngineFault): the run ends, reason
        `InternalError`."""
        settings = self.runtime.settings
        backoff = settings.outage_backoff
        failures = 0
        parked: Parked | None = None
        try:
            while True:
                progress = len(self.records)
                try:
                    if self._body is None:
                        got = await self.runtime.get(WORKFLOW, self.ref.namespace, self.ref.name)
                        if got is None or got["metadata"].get("uid") != self.ref.uid:
                            return None  # deleted meanwhile: its DELETED event forgets it
                        self._body = got
                    await self._claim()
                    parked = await self._drive_held()
                    return parked
                except Fenced as e:
                    self.logger.warning(f"lost the run ({e}); claiming it again")
                    self._abandon_actions()
                except EngineFault as e:
                    self._abandon_actions()
                    if not await self._end_with_internal_error(e):
                        return None
                except Exception as e:
                    self._abandon_actions()
                    failures = 1 if len(self.records) != progress else failures + 1
                    delay = backoff[min(failures, len(backoff)) - 1]
                    problem = describe_error(e)
                    self.logger.warning(f"interrupted ({problem}); resuming in {delay}s")
                    if failures >= settings.stalled_after_failures:
                        with contextlib.suppress(Exception):
                            await self._stalled("Retrying", f"resuming after an error: {problem}")
                    await asyncio.sleep(delay)
        finally:
            self._abandon_actions()
            if self.publisher is not None and not self.publisher.done():
                self.publisher.cancel()
            if parked is None:
                # A run stopped because another replica owns it now is handed to that one.
                to = None if self.state.finished else self.runtime.shards.owner(self.ref.uid)
                with contextlib.suppress(Exception):
                    await self.runtime.fence.release(self.ref.uid, to=to)

    async def _end_with_internal_error(self, fault: EngineFault) -> bool:
        """Journal the end of the run after `fault` (once: then drive on, so that its
        compensations run and status shows the end). False when the run was finished
        already, so nothing more can be journaled: status says why, the driver stops."""
        self.logger.error(f"internal error, ending the run: {fault}", exc_info=fault.cause)
        ending = decide.internal_error(self.state, fault.cause, fault.doing)
        if ending is None:
            with contextlib.suppress(Exception):
                await self._stalled("InternalError", f"internal error while {fault}")
            return False
        if isinstance(ending.data, records.WorkflowFinished):
            # As in _step_once, but at best: this runs while handling the fault.
            await self._cancel_children(required=False, finishing=True)
        await self._commit(ending)
        return True

    async def _drive_held(self) -> Parked | None:
        await self._reload()
        if self.records and not self.state.finished:
            # A crash may have come between a record that abandoned a child and its
            # cancellation: cancel again (idempotent).
            await self._cancel_children(required=False)
        while not self.records:
            self.wakeup.clear()
            try:
                await self._start()
            except _NotYet as e:
                created = (self.object.get("metadata") or {}).get("creationTimestamp")
                spec = self.object.get("spec") or {}
                waiting = pure(
                    "waiting for the template",
                    decide.waiting_to_start,
                    spec.get("timeout"),
                    parse_time(created) if created else datetime.now(UTC),
                    datetime.now(UTC),
                    str(e),
                    cancel=bool(spec.get("cancel")),
                )
                if isinstance(waiting, decide.Commit):
                    await self._commit(waiting)  # timed out or cancelled before it started
                    continue
                await self._stalled("WaitingForTemplate", str(e))
                await self._sleep(waiting, self.runtime.settings.template_retry_seconds)
        while not self.state.finished:
            parked = await self._step_once()
            if parked is not None:
                return parked
        await self._publish(decide.Done(), force=True)
        return None

    def _abandon_actions(self) -> None:
        """Stop performing: the journal decides again what to do with their steps."""
        for task, _ in self.acting.values():
            task.cancel()
        self.acting.clear()

    async def _cancel_children(self, required: bool, finishing: bool = False) -> None:
        """Cancel the child runs this run no longer waits for (engine/children.py);
        `finishing`: the run is about to journal its end, so it awaits none. Errors
        raise when `required` (the run must not be recorded as finished before its
        children are cancelled), else are logged: resuming or finishing cancels again."""
        if self.state.spec is None or not children.has_children(self.state.spec):
            return
        awaited: frozenset[str] = frozenset()
        if not finishing:
            awaited = pure("finding the awaited children", children.awaited_children, self.state)
        try:
            cancelled = await child.cancel_abandoned(self.runtime, self.ref, awaited)
        except Exception as e:
            if required:
                raise
            self.logger.warning(f"could not cancel abandoned child runs: {describe_error(e)}")
            return
        for name in cancelled:
            self._event("Normal", "CancelledChild", f"cancelled child run {name}: not awaited")

    async def _stop_actions(self) -> None:
        """Cancel the actions still being performed and wait until they have stopped
        (a child they were about to create is then created, or never will be)."""
        tasks = [task for task, _ in self.acting.values()]
        self._abandon_actions()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _claim(self) -> None:
        """Hold the run's fencing key; wait while another live executor holds it.

        Waits first for this executor's own lease (granted again after it was lost, e.g.
        while the process was paused): until then every commit would be refused. Another
        holder is asked again after 0.5 s, then twice as long each time up to
        `claim_retry_seconds`: a replica handing a run over releases it within moments."""
        fence = self.runtime.fence
        await fence.alive.wait()
        waited = 0.0
        delay = min(0.5, self.runtime.settings.claim_retry_seconds)
        while (holder := await fence.claim(self.ref.uid)) is not None:
            self.logger.info(f"run is held by executor {holder}; waiting")
            if waited > 2 * fence.ttl:
                # Longer than a dead executor's lease lasts: someone alive holds it.
                await self._stalled(
                    "HeldByAnotherExecutor",
                    f"executor {holder} holds this run; it resumes here when that one "
                    "stops or its lease expires",
                )
            await asyncio.sleep(delay)
            waited += delay
            delay = min(2 * delay, self.runtime.settings.claim_retry_seconds)
            await fence.alive.wait()

    async def _reload(self) -> None:
        self.records, read_at, last = await self.runtime.journal.read(self.ref.uid)
        self.revision = last or read_at
        self.state = pure("reading the journal", fold, self.records)

    # -- starting -----------------------------------------------------------------------

    async def _start(self) -> None:
        """Resolve, validate and pin the definition as the journal's first record."""
        try:
            definition, template = await self._resolve()
        except _Invalid as e:
            await self._invalid(str(e))
            return
        problem = sizes.size_problem(
            definition.input, self.runtime.settings.max_value_bytes, "the run's input"
        )
        if problem is not None:
            await self._invalid(problem)
            return
        workflow = {"name": self.ref.name, "namespace": self.ref.namespace, "uid": self.ref.uid}
        start = pure(
            "starting",
            decide.start_record,
            definition,
            definition.input,
            workflow,
            datetime.now(UTC),
            template,
            traceparent=(self.object.get("metadata", {}).get("annotations") or {}).get(
                TRACEPARENT_ANNOTATION
            ),
        )
        # No Event: status shows the pinned template (and the Running phase, with its
        # Event, once written); a fast run's only Event is its end.
        await self._commit(start, chain=True)

    async def _invalid(self, message: str) -> None:
        """End the run before it starts: `message` says what to fix."""
        await self._commit(
            decide.Commit(
                "WorkflowFinished",
                data=records.WorkflowFinished(
                    phase="Invalid",
                    reason="Invalid",
                    error=records.RunError(reason="Invalid", message=message),
                ),
            )
        )
        self._event("Warning", "Invalid", message)

    async def _resolve(self) -> tuple[WorkflowSpec, dict[str, Any] | None]:
        spec = dict(self.object.get("spec", {}))
        try:
            definition = WorkflowSpec.model_validate(spec)
        except ValidationError as e:
            raise _Invalid(_validation_message(e, "spec")) from None
        template_info = None
        if definition.template_ref is not None:
            name = definition.template_ref.name
            template = await self.runtime.get(WORKFLOW_TEMPLATE, self.ref.namespace, name)
            if template is None:
                raise _NotYet(f"WorkflowTemplate {name!r} not found; waiting for it")
            try:
                tspec = WorkflowTemplateSpec.model_validate(template.get("spec", {}))
            except ValidationError as e:
                raise _Invalid(
                    f"WorkflowTemplate {name}: {_validation_message(e, 'spec')}"
                ) from None
            if tspec.input_schema is not None:
                _check_input(tspec.input_schema, definition.input)
            definition = definition.model_copy(
                update={
                    "steps": tspec.steps,
                    "template_ref": None,
                    "output": definition.output if definition.output is not None else tspec.output,
                    "retry": definition.retry or tspec.retry,
                    "timeout": definition.timeout or tspec.timeout,
                }
            )
            meta = template["metadata"]
            template_info = {
                "name": name,
                "generation": meta.get("generation"),
                "uid": meta.get("uid"),
            }
        try:
            check_expressions(definition, "spec")
        except expressions.ExpressionError as e:
            raise _Invalid(str(e)) from None
        return definition, template_info

    async def _stalled(self, reason: str, message: str) -> None:
        """Say in status why no progress is possible (instead of hanging silently)."""
        message = one_line(message)
        previous = self.object.get("status") or {}
        generation = self.object.get("metadata", {}).get("generation")
        stalled = updated_condition(
            "Stalled",
            "True",
            reason,
            message,
            generation,
            previous.get("conditions"),
            now_rfc3339(),
        )
        conditions = [stalled.to_status()]
        phase = previous.get("phase") or "Pending"
        status = {"phase": phase, "message": message, "conditions": conditions}
        if self.last_status != status:
            await self.runtime.patch_status(WORKFLOW, self.ref.namespace, self.ref.name, status)
            self._event("Warning", "Stalled", message)
            self.last_status = status

    # -- running ------------------------------------------------------------------------

    async def _step_once(self) -> Parked | None:
        """Take one decision; Parked when the run waits with nothing in flight."""
        # Cleared before the object is read: a change from now on wakes the wait below.
        self.wakeup.clear()
        await self._harvest()
        await self._ingest_signals()
        spec = self.object.get("spec", {})
        flags = decide.Flags(suspend=bool(spec.get("suspend")), cancel=bool(spec.get("cancel")))
        now = datetime.now(UTC)
        decision = decide.next_decision(self.state, now, flags, busy=frozenset(self.acting))
        if isinstance(decision, decide.Commit):
            if isinstance(decision.data, records.WorkflowFinished):
                # The run awaits nothing more: stop performing, and cancel every child
                # before the end is journaled (a crash before it repeats this).
                await self._stop_actions()
                await self._cancel_children(required=True, finishing=True)
            decision = await self._commit(decision, chain=True)
            await self._publish(decision)
        elif isinstance(decision, decide.Act):
            # Perform in the background: the engine may find other work meanwhile
            # (the other branches of a parallel step); the outcome is committed by
            # _harvest once the action returns.
            context = pure("evaluating", decide.evaluation_context, self.state, decision.scope)
            task = asyncio.create_task(
                perform(self.runtime, self.ref, decision, context),
                context=tracing.attempt_context(self.ref.uid, self.state, decision),
            )
            self.acting[decision.step.name] = (task, decision)
            await self._publish(decision)
        elif isinstance(decision, decide.Wait):
            await self._publish(decision, force=not self.acting)
            until = wake_time(decision.until)
            waiting = None if until is None else until - time.time()
            if not self.wakeup.is_set() and parks(waiting, bool(self.acting), PARK_AFTER_SECONDS):
                # No await from here to the end of the task: a change observed from
                # now on finds it parked, and drives it again.
                return Parked(self.ref, until, wake_fingerprint(self.object))
            await self._sleep(decision)
        return None

    async def _harvest(self) -> None:
        """Commit the outcome of every action that has returned."""
        for name, (task, act) in list(self.acting.items()):
            if not task.done():
                continue
            del self.acting[name]
            try:
                output, error = task.result()
            except Exception as e:  # a bug or an outage, not the user's doing: retry
                self.logger.exception(f"performing {name} failed")
                output, error = (
                    None,
                    decide.StepError("InternalError", describe_error(e), retryable=True),
                )
            if error is None:
                error = self._too_large(output, f"the output of step {act.step.name}")
                if error is not None:
                    output = None
            ended = pure(
                "recording an outcome",
                decide.outcome,
                self.state,
                act,
                datetime.now(UTC),
                output,
                error,
            )
            await self._commit(ended)

    def _too_large(self, value: Any, what: str) -> decide.StepError | None:
        """OutputTooLarge when `value` is over the journal's size limit (checked before
        the write: the action is not performed again, unless `retryOn` lists the kind)."""
        problem = sizes.size_problem(value, self.runtime.settings.max_value_bytes, what)
        if problem is None:
            return None
        return decide.StepError("OutputTooLarge", problem, retryable=False)

    async def _ingest_signals(self) -> None:
        """Consume the `kurable.dev/signal.NAME` annotations (engine/signals.py): journal
        each new send once, then remove its annotation and move the consumed marker."""
        for _ in range(SIGNAL_ATTEMPTS):
            annotations = self.object.get("metadata", {}).get("annotations") or {}
            taken = pure(
                "reading signals",
                signals.intake,
                annotations,
                self.state.signals,
                max_payload_bytes=self.runtime.settings.max_value_bytes,
            )
            if taken.idle:
                return
            if taken.arrivals:
                for arrival in taken.arrivals:
                    await self._commit(
                        decide.Commit(
                            "SignalReceived",
                            data=signals.signal_record(arrival, self.state.format_version),
                        )
                    )
                    # No Event: the journal shows the signal, and status the step it ends.
                continue  # journaled: now they are redeliveries, to be removed
            for bad in taken.unreadable:
                self._event(
                    "Warning", "InvalidSignal", f"{bad.key}: {bad.problem}; removed, send again"
                )
            if await self._consume(pure("consuming signals", signals.consumption_patch, taken)):
                return

    async def _consume(self, patch: list[dict[str, Any]]) -> bool:
        """Apply the consumption patch; False when the object changed meanwhile (then the
        newest copy has been read: take the intake again)."""
        ref = self.ref
        base = _version(self.body)
        try:
            updated = await self.runtime.patch_json(WORKFLOW, ref.namespace, ref.name, patch)
        except k8s.ApiException as e:
            if e.status == 404:
                return True  # deleted: nothing more to consume
            if e.status not in (409, 422):
                raise
            latest = await self.runtime.get(WORKFLOW, ref.namespace, ref.name)
            if latest is None:
                return True
            self.fresh, self.fresh_base = latest, base
            return False
        # Until the watch delivers it, the patched object is the newest copy.
        self.fresh, self.fresh_base = updated, base
        return True

    async def _sleep(self, decision: decide.Wait, cap: float | None = None) -> None:
        """Until the decision's time, a change of the run (since the wake-up was last
        cleared), or an action returning."""
        timeout = cap
        if decision.until is not None:
            until = max(0.0, (decision.until - datetime.now(UTC)).total_seconds())
            timeout = until if timeout is None else min(timeout, until)
        woken = asyncio.create_task(self.wakeup.wait())
        try:
            await asyncio.wait(
                {woken, *(task for task, _ in self.acting.values())},
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woken.cancel()

    async def _commit(self, decision: decide.Commit, chain: bool = False) -> decide.Commit:
        """Journal `decision`, and with `chain` the decisions that follow it at once with
        nothing to do in between (`_follows`), in one transaction (a 3-step run of `set`
        steps is one commit after its start). Returns the last decision committed; raises
        Fenced when this executor no longer holds the run. When a slot was taken meanwhile,
        reads the journal again instead (it is the truth) and commits nothing."""
        at = now_rfc3339()
        labels = (self.object.get("metadata") or {}).get("labels")
        chained: list[tuple[decide.Commit, Record, RunState]] = []
        entries: list[tuple[Record, RunChange | None]] = []
        state = self.state
        following: decide.Commit | None = decision
        while following is not None and len(chained) < MAX_TXN_RECORDS:
            record = Record(
                seq=len(self.records) + len(chained),
                type=following.type,
                at=at,
                step=following.step,
                attempt=following.attempt,
                data=following.data,
                executor=self.runtime.fence.id,
            )
            try:
                after = pure("reading the journal", apply, state, record)
                value = pure("describing the run's change", run_change, after, record, labels)
            except EngineFault:
                if not chained:
                    raise
                break  # what was decided before it commits; the next step meets it again
            change = None
            if value is not None:
                namespace = str(after.workflow.get("namespace") or self.ref.namespace)
                change = RunChange(namespace, template_of(after), value)
            chained.append((following, record, after))
            entries.append((record, change))
            state = after
            following = self._follows(after, record) if chain else None
        clock = metrics.Stopwatch()
        try:
            count, self.revision = await self.runtime.journal.append_all(
                self.ref.uid, entries, self.runtime.fence
            )
        except SlotTaken:
            # Someone else committed this slot; the journal is the truth: read it again.
            await self._reload()
            return decision
        except Fenced:
            metrics.fencing_refused()
            raise
        seconds: float | None = clock.seconds  # one transaction: observed once
        for committed, record, after in chained[:count]:
            self.records.append(record)
            before = self.state
            self.state = after
            self._observe(before, record, seconds)
            seconds = None
            self._announce(record)
            if children.may_abandon(record):
                await self._cancel_children(required=False)
            decision = committed
        return decision

    def _follows(self, state: RunState, record: Record) -> decide.Commit | None:
        """The decision that follows `record` at once, to commit with it, if nothing is
        to be done before it: no action in flight, no child run to cancel (the run has
        no `workflow` step), a record after which children need no cancelling, a run not
        finished; and the next decision is itself a commit. An error deciding ends the
        chain: the next step decides again and reports it."""
        if state.finished or self.acting or children.may_abandon(record):
            return None
        if state.spec is None or children.has_children(state.spec):
            return None
        spec = self.object.get("spec", {})
        flags = decide.Flags(suspend=bool(spec.get("suspend")), cancel=bool(spec.get("cancel")))
        try:
            following = decide.next_decision(state, datetime.now(UTC), flags, busy=frozenset())
        except Exception:
            return None
        return following if isinstance(following, decide.Commit) else None

    def _observe(self, before: RunState, record: Record, seconds: float | None) -> None:
        """Count the committed record and make its spans: never a reason to stop the run."""
        try:
            metrics.record_committed(before, record, self.state, seconds)
            tracing.record_committed(self.ref.uid, before, record, self.state)
        except Exception:
            self.logger.exception(f"could not count record {record.seq} ({record.type})")

    def _announce(self, record: Record) -> None:
        data = record.data.to_wire()
        if record.type == "WorkflowFinished" and data["phase"] != "Invalid":
            message = (data.get("error") or {}).get("message") or "all steps completed"
            kind = "Normal" if data["phase"] == "Succeeded" else "Warning"
            self._event(kind, data["phase"], f"{message} ({data.get('reason')})")
        elif record.type == "StepFailed":
            error = data.get("error") or {}
            text = f"{record.step} attempt {record.attempt}: {error.get('message')}"
            if data.get("retryAt"):
                self._event("Warning", "Retrying", f"{text}; next attempt at {data['retryAt']}")
            else:
                self._event("Warning", "StepFailed", text)
        elif record.type == "RunFailing" and decide.compensation_order(self.state):
            # With nothing to undo, the run finishes at once: its Failed Event says why.
            self._event("Warning", "Failing", decide.failing_message(self.state))

    async def _publish(self, decision: decide.Decision, force: bool = False) -> None:
        """Patch status from the journal. While steps commit back to back, patches are
        coalesced in the background, so a step never waits for the API server."""
        self.unpublished = decision
        settled = force or isinstance(decision, decide.Done)
        delay = status_write_delay(
            time.monotonic() - self.last_patch, self.runtime.settings.coalesce_seconds, settled
        )
        if settled:
            # A write in flight lands first (status must not go back); one still
            # waiting out the window is not waited for: this write carries it.
            if self.publisher is not None and not self.publisher.done():
                if self.patching:
                    await asyncio.wait({self.publisher})
                else:
                    self.publisher.cancel()
            try:
                await self._patch_latest()
            except EngineFault:
                raise  # a bug, not an unreachable API server: the run ends
            except Exception as e:
                if isinstance(decision, decide.Done):
                    raise  # the task ends after this: the final status must land
                self.logger.warning(f"could not patch status: {e}")
        elif self.publisher is None or self.publisher.done():
            self.publisher = asyncio.create_task(self._publish_later(delay))

    async def _publish_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self.patching = True
        try:
            await self._patch_latest()
        except Exception as e:  # status is a projection: the next publish repairs it
            self.logger.warning(f"could not patch status: {e}")
        finally:
            self.patching = False

    async def _patch_latest(self) -> None:
        if self.unpublished is None:
            return
        decision, self.unpublished = self.unpublished, None
        previous = self.last_status or dict(self.object.get("status") or {})
        status = pure(
            "projecting status",
            project,
            self.state,
            generation=self.object.get("metadata", {}).get("generation"),
            decision=decision,
            previous_conditions=previous.get("conditions"),
            now=now_rfc3339(),
            journal_revision=self.revision,
        )
        # Which replica drives the run (`kubectl get -o wide` shows the spread).
        status["executor"] = self.runtime.fence.executor
        if same_status(status, previous):
            # Written already: by this task, or (a run taken back after a restart or
            # from another replica) as the object shows it.
            self.last_status = status
            return
        await self.runtime.patch_status(WORKFLOW, self.ref.namespace, self.ref.name, status)
        # Terminal phases are announced when their record commits (see _announce).
        if status["phase"] != previous.get("phase") and status["phase"] in (
            "Running",
            "Suspended",
        ):
            self._event("Normal", status["phase"], status.get("message") or status["phase"])
        self.last_status = status
        self.last_patch = time.monotonic()

    def _event(self, type_: str, reason: str, message: str) -> None:
        message = one_line(message)  # one readable line, whatever text a step quoted
        queue = self.runtime.event_queue
        if queue is None or not queue(self.body, type_, reason, message):
            # The framework's event queue is known only in its handlers' context, not
            # in a task resync started: post the Event directly.
            self.runtime.post_event(self.object, type_, reason, message)


def _version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion", ""))


def check_expressions(definition: WorkflowSpec | WorkflowTemplateSpec, where: str) -> None:
    """Check a parsed definition whole (`engine.validate`); raise _Invalid listing every problem."""
    problems = validate.definition_problems(definition, where)
    if problems:
        raise _Invalid(validate.describe(problems))


def _check_input(schema: dict[str, Any], value: Any) -> None:
    problems = user_schema.check_schema(schema, "inputSchema")
    if problems:
        raise _Invalid("the template's inputSchema is not a valid schema: " + "; ".join(problems))
    problems = user_schema.validate(schema, value, "spec.input")
    if problems:
        raise _Invalid("input does not match the template's inputSchema: " + "; ".join(problems))


def _json_path(root: str, parts: Iterable[Any]) -> str:
    """`spec.steps[0].sleep` from ("steps", 0, "sleep")."""
    return root + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def _validation_message(error: ValidationError, root: str) -> str:
    """pydantic's errors as `spec.steps[0].sleep: unknown field durationn`, all of them."""
    return validate.describe(validate.model_problems(error, root))
