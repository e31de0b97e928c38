"""The Restate side of bench/peers.py: a 3-step workflow served by Restate's Python SDK
(run with hypercorn from the Restate cache's own venv, see hack/restate.sh).

Each step is a journaled `ctx.run` that returns the wall time it ran at, so the bench
reads the step latency from the output as it reads Kurable's from its journal.
"""

from __future__ import annotations

import time

import restate  # type: ignore[import-not-found]  # only in the Restate venv

flow = restate.Workflow("BenchFlow")


def now() -> float:
    return time.time()


@flow.main()
async def run(ctx: restate.WorkflowContext, seed: int) -> list[float]:
    return [await ctx.run(f"s{i}", now) for i in range(3)]


app = restate.app(services=[flow])
