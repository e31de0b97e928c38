"""Step actions with effects outside the journal: one module per step kind.

Each performer gets the attempt to run (`decide.Act`) and answers (output, error).
They may run more than once for one attempt (a crash between acting and committing),
so each sends a stable idempotency key: `<workflow uid>/<step>`.

`PERFORMERS` is the one table of them, keyed by the step kind (the `Step` model's
action field). Kinds the engine decides alone (`set`, `sleep`, `wait`, `parallel`)
have no performer; a kind in neither is refused at run time as `Unsupported`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from kurable.api.v1alpha1.workflow import ACTIONS
from kurable.engine import expressions
from kurable.engine.decide import Act, StepError

from ..runtime import Runtime
from . import child, emit, entity, http, view
from .outcome import Outcome, RunRef

Performer = Callable[[Runtime, RunRef, Act, dict[str, Any]], Awaitable[Outcome]]
"""Runs one attempt: (runtime, the run, the attempt, its CEL context) -> (output, error)."""

PERFORMERS: Mapping[str, Performer] = {
    "http": http.perform,
    "workflow": child.perform,
    "entity": entity.perform,
    "emit": emit.perform,
    "view": view.perform,
}
"""Step kind -> the performer of its attempts."""

_unknown = set(PERFORMERS) - set(ACTIONS)
if _unknown:  # a typo here would silently leave a kind unperformed
    raise ImportError(f"performers for step kinds the Step model lacks: {sorted(_unknown)}")

__all__ = ["PERFORMERS", "Outcome", "Performer", "RunRef", "perform"]


async def perform(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    """Run one attempt of `act.step`; never raises for failures a user can cause."""
    performer = PERFORMERS.get(act.step.action)
    if performer is None:
        return None, StepError(
            "Unsupported",
            f"{act.step.name}: step kind {act.step.action!r} is not executed by this "
            "operator version",
            retryable=False,
        )
    try:
        if act.deadline is None:
            return await performer(runtime, run, act, context)
        remaining = (act.deadline - datetime.now(UTC)).total_seconds()
        return await asyncio.wait_for(performer(runtime, run, act, context), max(0.0, remaining))
    except TimeoutError:
        return None, StepError("Timeout", f"attempt {act.attempt} timed out")
    except expressions.ExpressionError as e:
        return None, StepError("ExpressionError", str(e))
