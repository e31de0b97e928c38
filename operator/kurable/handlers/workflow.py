"""Workflow handlers: a daemon per unfinished run drives it from its journal.

The daemon is thin: it asks the pure engine what to do next, journals the answer
in etcd (commit protocol of DESIGN.md), and projects status from the journal.
kopf starts it for every unfinished Workflow when the operator starts, which is
the whole of crash recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from kurable.api.v1alpha1 import GROUP, VERSION, WORKFLOW, WorkflowSpec
from kurable.engine import decide, expressions
from kurable.engine.journal import TERMINAL_PHASES, Record, RunState, apply, fold, now_rfc3339
from kurable.engine.status import project
from kurable.store.journal import Fenced, SlotTaken

from ._runtime import Runtime

COALESCE_SECONDS = 0.5
"""While steps commit back to back, status is patched at most this often."""
CLAIM_RETRY_SECONDS = 5.0


@kopf.on.event(GROUP, VERSION, WORKFLOW.plural)
async def wake(uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Any change (spec flags, annotations) may unblock a waiting run: wake its executor."""
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None and uid in runtime.wakeups:
        runtime.wakeups[uid].set()


# No `when=` filter on the phase: kopf would stop the daemon the moment its own final
# status patch lands, racing the fence release. A finished run's daemon returns at once.
@kopf.daemon(GROUP, VERSION, WORKFLOW.plural, cancellation_timeout=2.0)
async def execute(
    body: kopf.Body,
    uid: str,
    name: str,
    namespace: str | None,
    memo: Any,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    """Run a workflow to its end (or until the daemon is stopped)."""
    if body.get("status", {}).get("phase") in TERMINAL_PHASES:
        return  # status is projected from the journal: the journal says finished too
    runtime: Runtime = memo["runtime"]
    assert namespace is not None, "Workflows are namespaced"
    run = _Run(runtime, body, uid, name, namespace, logger)
    try:
        await run.drive()
    finally:
        runtime.wakeups.pop(uid, None)


@kopf.on.delete(GROUP, VERSION, WORKFLOW.plural)
async def forget(
    uid: str, memo: Any, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    """Deleting a Workflow removes its journal (the finalizer waits for this)."""
    runtime: Runtime = memo["runtime"]
    deleted = await runtime.journal.forget(uid)
    logger.info(f"removed the journal ({deleted} keys)")


class _Run:
    """One executor's hold on one run."""

    def __init__(
        self,
        runtime: Runtime,
        body: kopf.Body,
        uid: str,
        name: str,
        namespace: str,
        logger: logging.Logger | logging.LoggerAdapter[Any],
    ) -> None:
        self.runtime = runtime
        self.body = body
        self.uid = uid
        self.name = name
        self.namespace = namespace
        self.logger = logger
        self.records: list[Record] = []
        self.state = RunState()
        self.revision = 0
        self.last_status: dict[str, Any] | None = None
        self.last_patch = 0.0
        self.wakeup = runtime.wakeup(uid)

    async def drive(self) -> None:
        await self._claim()
        try:
            await self._reload()
            if not self.records and not await self._start():
                return
            while True:
                await self._step_once()
                if self.state.finished:
                    await self._publish(decide.Done(), force=True)
                    return
        except Fenced as e:
            self.logger.warning(f"stopped driving the run: {e}")
        finally:
            with contextlib.suppress(Exception):
                await self.runtime.fence.release(self.uid)

    async def _claim(self) -> None:
        """Hold the run's fencing key; wait while another live executor holds it."""
        while (holder := await self.runtime.fence.claim(self.uid)) is not None:
            self.logger.info(f"run is held by executor {holder}; waiting")
            await asyncio.sleep(CLAIM_RETRY_SECONDS)

    async def _reload(self) -> None:
        self.records, self.revision = await self.runtime.journal.load(self.uid)
        self.state = fold(self.records)

    async def _start(self) -> bool:
        """Validate and pin the definition as the journal's first record."""
        spec = dict(self.body.get("spec", {}))
        try:
            definition = WorkflowSpec.model_validate(spec)
            if definition.template_ref is not None:
                raise _Invalid(
                    "spec.templateRef: runs from templates are not supported by this operator "
                    "version; write the steps inline"
                )
            for step in definition.steps or []:
                for field_name in ("set", "when"):
                    value = getattr(step, field_name)
                    if value is not None:
                        expressions.check(value, f"spec.steps[{step.name}].{field_name}")
            expressions.check(definition.output, "spec.output")
        except ValidationError as e:
            return await self._invalid(_validation_message(e))
        except (_Invalid, expressions.ExpressionError) as e:
            return await self._invalid(str(e))
        workflow = {"name": self.name, "namespace": self.namespace, "uid": self.uid}
        await self._commit(decide.start_record(definition, definition.input, workflow))
        self._event(
            "Normal", "Started", f"pinned definition with {len(definition.steps or [])} steps"
        )
        return True

    async def _invalid(self, message: str) -> bool:
        await self._commit(
            decide.Commit(
                "WorkflowFinished",
                data={"phase": "Invalid", "error": {"reason": "Invalid", "message": message}},
            )
        )
        await self._publish(decide.Done(), force=True)
        self._event("Warning", "Invalid", message)
        return False

    async def _step_once(self) -> None:
        now = datetime.now(UTC)
        flags = decide.Flags(suspend=bool(self.body.get("spec", {}).get("suspend")))
        decision = decide.next_decision(self.state, now, flags)
        if isinstance(decision, decide.Commit):
            await self._commit(decision)
            await self._publish(decision)
        elif isinstance(decision, decide.Wait):
            await self._publish(decision, force=True)
            await self._sleep(decision)
        elif isinstance(decision, decide.Act):
            raise NotImplementedError(f"no executor for step kind {decision.step.action}")

    async def _sleep(self, decision: decide.Wait) -> None:
        self.wakeup.clear()
        timeout = None
        if decision.until is not None:
            timeout = max(0.0, (decision.until - datetime.now(UTC)).total_seconds())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wakeup.wait(), timeout)

    async def _commit(self, decision: decide.Commit) -> None:
        record = Record(
            seq=len(self.records),
            type=decision.type,
            at=now_rfc3339(),
            step=decision.step,
            attempt=decision.attempt,
            data=decision.data,
            executor=self.runtime.fence.id,
        )
        try:
            self.revision = await self.runtime.journal.append(self.uid, record, self.runtime.fence)
        except SlotTaken:
            # Someone else committed this slot; the journal is the truth: read it again.
            await self._reload()
            return
        self.records.append(record)
        previous_phase = self.state.phase
        self.state = apply(self.state, record)
        self._announce(record, previous_phase)

    def _announce(self, record: Record, previous_phase: str | None) -> None:
        if record.type == "WorkflowFinished" and record.data["phase"] != previous_phase:
            phase = record.data["phase"]
            error = record.data.get("error") or {}
            if phase == "Succeeded":
                self._event("Normal", "Succeeded", "all steps completed")
            elif phase != "Invalid":
                self._event("Warning", phase, error.get("message", phase))
        elif record.type == "StepFailed":
            self._event(
                "Warning", "StepFailed", f"{record.step}: {record.data['error']['message']}"
            )

    async def _publish(self, decision: decide.Decision, force: bool = False) -> None:
        """Patch status from the journal, coalescing while steps commit back to back."""
        if not force and time.monotonic() - self.last_patch < COALESCE_SECONDS:
            return
        status = project(
            self.state,
            generation=self.body.get("metadata", {}).get("generation"),
            decision=decision,
            previous_conditions=(self.last_status or dict(self.body.get("status", {}))).get(
                "conditions"
            ),
            now=now_rfc3339(),
            journal_revision=self.revision,
        )
        comparable = {k: v for k, v in status.items() if k != "conditions"}
        if self.last_status is not None and comparable == {
            k: v for k, v in self.last_status.items() if k != "conditions"
        }:
            return
        await self.runtime.patch_status(WORKFLOW, self.namespace, self.name, status)
        # Terminal phases are announced when their record commits (see _announce).
        before = (self.last_status or self.body.get("status") or {}).get("phase")
        if status["phase"] != before and status["phase"] in ("Running", "Suspended"):
            self._event("Normal", status["phase"], status.get("message") or status["phase"])
        self.last_status = status
        self.last_patch = time.monotonic()

    def _event(self, type_: str, reason: str, message: str) -> None:
        if type_ == "Warning":
            kopf.warn(self.body, reason=reason, message=message)
        else:
            kopf.info(self.body, reason=reason, message=message)


class _Invalid(Exception):
    pass


def _validation_message(error: ValidationError) -> str:
    """pydantic's errors as `spec.steps[0].sleep.duration: <problem>`, one per line."""
    lines = []
    for item in error.errors()[:5]:
        path = "spec"
        for part in item["loc"]:
            path += f"[{part}]" if isinstance(part, int) else f".{part}"
        lines.append(f"{path}: {item['msg']}")
    return "; ".join(lines)
