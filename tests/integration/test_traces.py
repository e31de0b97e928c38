"""A run started through the endpoint with a `traceparent` is one trace under it, with a
span per step attempt, also when the operator is SIGKILLed mid-run; its HTTP steps pass
the trace on."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from kurable.engine.tracecontext import run_span_id
from kurable.testing import ControlPlane

from .conftest import eventually, get, journal, wait_phase
from .endpoint_http import call
from .observe_stack import stack
from .otlp import Receiver
from .service import Service

pytestmark = pytest.mark.integration


def test_a_run_is_one_trace_under_the_callers_traceparent_across_a_sigkill(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    trace_id = int(secrets.token_hex(16), 16)
    caller_span = int(secrets.token_hex(8), 16) | 1
    traceparent = f"00-{trace_id:032x}-{caller_span:016x}-01"
    with Receiver() as receiver, Service() as service:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        with stack(control_plane, tmp_path, "traces", env) as up:
            template = {
                "apiVersion": "kurable.dev/v1alpha1",
                "kind": "WorkflowTemplate",
                "metadata": {"name": "traced"},
                "spec": {
                    "steps": [
                        {"name": "a", "set": {"x": 1}},
                        {"name": "b", "wait": {"signal": "go", "timeout": "10m"}},
                        {"name": "c", "http": {"url": service.url("/c")}},
                    ]
                },
            }
            up.cp.kubectl("apply", "-n", up.namespace, "-f", "-", input=json.dumps(template))
            started = call(
                up.v1("workflows"),
                "POST",
                up.token,
                {"templateRef": {"name": "traced"}, "name": "traced-run"},
                headers={"traceparent": traceparent},
            )
            assert started.status == 201, started.text
            uid = started.body["uid"]
            eventually(
                lambda: {s.name for s in receiver.of_trace(trace_id)},
                lambda names: "step a" in names,
                what="the first step's span exported",
            )
            eventually(
                lambda: get(up.cp, up.namespace, "workflow/traced-run"),
                lambda wf: any(
                    s["name"] == "b" and s["phase"] == "Waiting"
                    for s in (wf.get("status") or {}).get("steps") or []
                ),
                what="step b waiting",
            )
            up.operator.kill()  # SIGKILL, mid-run: nothing flushed on the way out
            up.operator = up.new_operator().start()
            sent = call(up.v1("workflows/traced-run/signals/go"), "POST", up.token, {"ok": True})
            assert sent.status == 202, sent.text
            wait_phase(up.cp, up.namespace, "traced-run", ("Succeeded",))

            first = journal(up.cp, uid, up.space.prefix)[0]
            assert first.data.to_wire()["traceparent"] == traceparent

            spans = eventually(
                lambda: {s.name: s for s in receiver.of_trace(trace_id)},
                lambda got: {"step a", "step b", "step c", "workflow traced"} <= set(got),
                what="a span for each step and the run",
            )
    run = spans["workflow traced"]
    assert run.parent_span_id == caller_span
    assert run.span_id == run_span_id(uid)
    for name in ("step a", "step b", "step c"):
        assert spans[name].parent_span_id == run.span_id, name
        assert spans[name].attributes["kurable.step.outcome"] == "succeeded"
        assert spans[name].attributes["kurable.step.attempt"] == 1
    assert spans["step c"].attributes["kurable.step.kind"] == "http"
    # step b began before the kill and ended after it: one span across the restart
    b = spans["step b"]
    assert b.start_ns < spans["step c"].start_ns and b.end_ns > b.start_ns
    assert run.start_ns <= spans["step a"].start_ns and run.end_ns >= spans["step c"].end_ns
    # the HTTP step sent the trace on, its attempt's span as the parent
    assert service.traceparents == [f"00-{trace_id:032x}-{spans['step c'].span_id:016x}-01"]
