"""Benchmark: what counting a committed journal record costs the run driver.

    .venv/bin/python bench/observe.py [--runs 2000]

Replays the journals of N three-step runs (a `set`, an `http` step retried once, a
`set`) through kurable.executor.metrics and kurable.executor.tracing exactly as the run
driver does after each commit, and prints microseconds per record: metrics alone, and
metrics plus tracing (spans exported by the SDK's BatchSpanProcessor to an exporter that
drops them, so the figure is the operator's side only). A journal commit itself (one
etcd transaction) takes about a millisecond (bench/chain.py): the ratio is printed.
Figures only, never pass/fail.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.unit.engine.test_failures import simulate

from kurable.engine import decide
from kurable.engine.decide import StepError
from kurable.engine.journal import Record, RunState, apply
from kurable.executor import metrics, tracing

THREE_STEPS = {
    "steps": [
        {"name": "a", "set": {"x": 1}},
        {"name": "b", "http": {"url": "http://svc/b"}, "retry": {"maxAttempts": 3}},
        {"name": "c", "set": {"y": 2}},
    ]
}
COMMIT_SECONDS = 0.001
"""An etcd journal commit on loopback, for scale (bench/chain.py measures it)."""


class Dropped(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def flaky(act: decide.Act, n: int) -> tuple[Any, StepError | None]:
    if act.step.name == "b" and n == 1:
        return None, StepError("HttpServerError", "503")
    return {"ok": n}, None


def replay(journals: list[list[Record]]) -> tuple[float, int]:
    """Seconds spent counting every record of `journals`, and how many records."""
    spent, records = 0.0, 0
    for i, journal in enumerate(journals):
        uid = f"uid-{i}"
        state = RunState()
        for record in journal:
            before, state = state, apply(state, record)
            start = time.perf_counter()
            metrics.record_committed(before, record, state, 0.001)
            tracing.record_committed(uid, before, record, state)
            spent += time.perf_counter() - start
            records += 1
    return spent, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    args = parser.parse_args()
    journal = simulate(THREE_STEPS, flaky)
    first = journal[0]
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = [
        Record(0, first.type, first.at, data=first.data.model_copy(update={"traceparent": parent})),
        *journal[1:],
    ]
    journals = [traced] * args.runs

    tracing.configure(None)
    spent, records = replay(journals)
    plain = spent / records * 1e6
    tracing.configure(Dropped())
    spent, records = replay(journals)
    traced_us = spent / records * 1e6
    tracing.configure(None)
    print(f"{args.runs} runs, {records} records ({len(journal)} per run)")
    for what, us in (("metrics only", plain), ("metrics + tracing", traced_us)):
        share = us / (COMMIT_SECONDS * 1e6) * 100
        print(f"{what + ':':<20}{us:7.1f} us/record ({share:.1f}% of a 1 ms commit)")


if __name__ == "__main__":
    main()
