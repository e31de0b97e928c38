"""OpenTelemetry traces of runs: one trace per run, a span per step attempt (and per
compensation), the run's own span when it finishes.

Off unless configured: `configure_from_env` turns it on when `OTEL_EXPORTER_OTLP_ENDPOINT`
(or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, exporting with OTLP over HTTP; tests
pass their own exporter to `configure`. The standard `OTEL_*` variables (service name,
headers, batch delay) apply.

Spans are made from the journal as records commit: an attempt's span starts at its
StepStarted record's time and ends at its outcome's, so an attempt that began in a
process killed since is still traced whole by the process that commits its outcome.
Their ids are derived from the run (kurable.engine.tracecontext), so every replica names
the same trace and parents; the run's trace continues the `traceparent` journaled in
WorkflowStarted. Spans still batched in a process that is killed are lost (the journal,
not the trace, is the record of truth): keep `OTEL_BSP_SCHEDULE_DELAY` short where that
matters.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace import TraceFlags as OtelFlags

from kurable.engine.decide import Act, resolve
from kurable.engine.journal import Record, RunState, parse_time
from kurable.engine.tracecontext import (
    TraceParent,
    attempt_span_id,
    parse_traceparent,
    run_span_id,
    run_trace_id,
)

_tracer: trace.Tracer | None = None
_provider: TracerProvider | None = None
_ids: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "kurable_span_ids", default=None
)
"""(trace id, span id) the next span must get: set around each span's creation."""
_attempt: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "kurable_attempt_traceparent", default=None
)


class _RunIds(IdGenerator):
    """Ids from `_ids` when set (spans of runs), random otherwise."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()

    def generate_span_id(self) -> int:
        ids = _ids.get()
        return ids[1] if ids is not None else self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        ids = _ids.get()
        return ids[0] if ids is not None else self._random.generate_trace_id()


def configure(exporter: SpanExporter | None, service: str = "kurable-operator") -> None:
    """Trace runs, exporting to `exporter` in batches; None turns tracing off."""
    configure_processor(BatchSpanProcessor(exporter) if exporter is not None else None, service)


def configure_processor(processor: SpanProcessor | None, service: str = "kurable-operator") -> None:
    """As `configure`, with the span processor given (tests: a SimpleSpanProcessor)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    if processor is None:
        _tracer = _provider = None
        return
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service)})
    _provider = TracerProvider(resource=resource, id_generator=_RunIds())
    _provider.add_span_processor(processor)
    _tracer = _provider.get_tracer("kurable")


def configure_from_env(service: str = "kurable-operator") -> bool:
    """Turn tracing on when an OTLP endpoint is configured; True when it is on."""
    if not (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        return False
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    configure(OTLPSpanExporter(), service)
    return True


def enabled() -> bool:
    return _tracer is not None


def _nanos(at: str) -> int:
    return int(parse_time(at).timestamp() * 1_000_000_000)


def _parent(trace_id: int, span_id: int, flags: int) -> Any:
    context = SpanContext(trace_id, span_id, is_remote=True, trace_flags=OtelFlags(flags))
    return trace.set_span_in_context(NonRecordingSpan(context))


def _run_parent(uid: str, state: RunState) -> Any:
    """The context of the run's span (the parent of every attempt's span)."""
    parent = parse_traceparent(state.traceparent)
    flags = parent.flags if parent is not None else 1
    return _parent(run_trace_id(uid, state.traceparent), run_span_id(uid), flags)


def record_committed(uid: str, before: RunState, record: Record, after: RunState) -> None:
    """Make the spans that `record` (just committed to run `uid`'s journal) completes."""
    tracer = _tracer
    if tracer is None:
        return
    data = record.data.to_wire()
    if record.type in ("StepCompleted", "StepFailed") and record.step is not None:
        step = before.step(record.step)
        started = step.started_at or record.at  # `set` steps journal no StepStarted
        name = record.step
        compensation = name.endswith(":compensate")
        found = resolve(after, name) if after.spec is not None else None
        kind = "compensate" if compensation else (str(found.action) if found else "unknown")
        attempt = record.attempt or step.attempts or 1
        retrying = record.type == "StepFailed" and bool(data.get("retryAt"))
        outcome = (
            "succeeded" if record.type == "StepCompleted" else "retrying" if retrying else "failed"
        )
        attributes: dict[str, Any] = {
            "kurable.step.name": name,
            "kurable.step.kind": kind,
            "kurable.step.attempt": attempt,
            "kurable.step.outcome": outcome,
            "kurable.step.compensation": compensation,
            "kurable.workflow.namespace": str(after.workflow.get("namespace") or ""),
            "kurable.workflow.name": str(after.workflow.get("name") or ""),
        }
        ids = (
            run_trace_id(uid, after.traceparent),
            attempt_span_id(uid, name, max(1, step.visits), attempt),
        )
        error = data.get("error") or {}
        status = (
            Status(StatusCode.OK)
            if record.type == "StepCompleted"
            else Status(StatusCode.ERROR, f"{error.get('kind')}: {error.get('message')}")
        )
        _emit(
            tracer,
            f"{'compensate' if compensation else 'step'} {name}",
            _run_parent(uid, after),
            ids,
            started,
            record.at,
            attributes,
            status,
        )
    elif record.type == "WorkflowFinished" and after.started_at is not None:
        parent = parse_traceparent(after.traceparent)
        context = _parent(parent.trace_id, parent.span_id, parent.flags) if parent else None
        template = (after.template or {}).get("name")
        phase = str(data.get("phase"))
        attributes = {
            "kurable.workflow.namespace": str(after.workflow.get("namespace") or ""),
            "kurable.workflow.name": str(after.workflow.get("name") or ""),
            "kurable.workflow.uid": uid,
            "kurable.workflow.template": str(template or ""),
            "kurable.workflow.phase": phase,
            "kurable.workflow.reason": str(data.get("reason") or ""),
        }
        status = Status(StatusCode.OK) if phase == "Succeeded" else Status(StatusCode.ERROR, phase)
        _emit(
            tracer,
            f"workflow {template or after.workflow.get('name')}",
            context,
            (run_trace_id(uid, after.traceparent), run_span_id(uid)),
            after.started_at,
            record.at,
            attributes,
            status,
        )


def _emit(
    tracer: trace.Tracer,
    name: str,
    context: Any,
    ids: tuple[int, int],
    start: str,
    end: str,
    attributes: dict[str, Any],
    status: Status,
) -> None:
    with _ids_for(ids):
        span = tracer.start_span(
            name,
            context=context,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=_nanos(start),
        )
    span.set_status(status)
    span.end(end_time=max(_nanos(end), _nanos(start)))


@contextmanager
def _ids_for(ids: tuple[int, int]) -> Iterator[None]:
    token = _ids.set(ids)
    try:
        yield
    finally:
        _ids.reset(token)


def attempt_context(uid: str, state: RunState, act: Act) -> contextvars.Context:
    """The context to perform an attempt in (`asyncio.create_task(..., context=)`): its
    outside calls read the `traceparent` to send with `attempt_traceparent`, which names
    the attempt's span as the parent."""
    context = contextvars.copy_context()
    if _tracer is not None:
        parent = parse_traceparent(state.traceparent)
        header = TraceParent(
            run_trace_id(uid, state.traceparent),
            attempt_span_id(uid, act.step.name, act.visit, act.attempt),
            parent.flags if parent is not None else 1,
        ).header()
        context.run(_attempt.set, header)
    return context


def attempt_traceparent() -> str | None:
    """The `traceparent` of the attempt this task performs; None when not tracing."""
    return _attempt.get()
