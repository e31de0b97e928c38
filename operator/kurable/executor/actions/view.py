"""The `view` step: run a View's named query in this process's copy of its rows; the
step's output is the rows (journaled like every output, so a replay never queries again)."""

from __future__ import annotations

from typing import Any

from kurable.api.v1alpha1 import VIEW
from kurable.engine import expressions
from kurable.engine.decide import Act, StepError
from kurable.engine.views import ViewError

from ..runtime import Runtime
from ..views import Views, ViewUnavailable, verdict
from .outcome import Outcome, RunRef

ROW_CAP = 1000
"""The most rows a `view` step's output holds: a query needing more should page with its
own parameters (a step's output is journaled whole)."""


async def perform(runtime: Runtime, run: RunRef, act: Act, context: dict[str, Any]) -> Outcome:
    """Query the View; the output is the list of rows (objects by column name)."""
    spec = act.step.view
    assert spec is not None
    where = f"{act.step.name}.view"
    obj = await runtime.get(VIEW, run.namespace, spec.name)
    if obj is None:
        return None, StepError(
            "ViewNotFound", f"{where}: View {spec.name!r} not found in namespace {run.namespace}"
        )
    plan, problems = verdict(run.namespace, spec.name, obj.get("spec") or {})
    if problems:
        return None, StepError(
            "ViewInvalid", f"{where}: View {spec.name} is Invalid: {problems[0]}"
        )
    params = expressions.render(spec.params or {}, context, f"{where}.params")
    if runtime.views is None:
        runtime.views = Views(runtime.etcd, runtime.prefix, runtime.settings.state_dir)
    try:
        page = await runtime.views.query(plan, spec.query, params, cap=ROW_CAP)
    except ViewError as e:
        return None, StepError("InvalidQuery", f"{where}.{e.path}: {e.message}", retryable=False)
    except ViewUnavailable as e:
        return None, StepError("Unavailable", f"{where}: {e}")
    if page.more:
        return None, StepError(
            "TooManyRows",
            f"{where}: query {spec.query} returns more than {ROW_CAP} rows; narrow it "
            "(a LIMIT, a parameter)",
            retryable=False,
        )
    return page.rows, None
