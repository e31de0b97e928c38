"""The Argo CD health checks (Lua) give the right verdict for each phase the operator
writes; run by a real Lua interpreter (lupa), as Argo CD runs them (gopher-lua)."""

from __future__ import annotations

from typing import Any

import lupa
import pytest
import yaml

from tests.conftest import ROOT

ARGOCD = ROOT / "charts" / "kurable" / "argocd"


def health(kind: str, obj: dict[str, Any]) -> dict[str, str]:
    """Run health-<kind>.lua with `obj` as Argo CD does; return hs as a dict."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    hs = lua.execute((ARGOCD / f"health-{kind}.lua").read_text())
    result = dict(hs.items())
    assert set(result) == {"status", "message"}, result
    return result


def workflow(phase: str | None, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "kurable.dev/v1alpha1",
        "kind": "Workflow",
        "metadata": {"name": "hello", "generation": 1},
    }
    if phase is not None:
        obj["status"] = {"phase": phase, "observedGeneration": 1, **status}
    return obj


def succeeded_condition(status: str, reason: str, message: str) -> list[dict[str, Any]]:
    return [
        {"type": "Succeeded", "status": status, "reason": reason, "message": message},
        {"type": "Suspended", "status": "False", "reason": "NotSuspended", "message": ""},
    ]


@pytest.mark.parametrize(
    ("phase", "extra", "verdict", "says"),
    [
        (None, {}, "Progressing", "Waiting for the operator"),
        ("Pending", {}, "Progressing", "Pending"),
        ("Running", {"currentStep": "nap"}, "Progressing", "Running (step nap)"),
        ("Suspended", {"message": "Suspended"}, "Suspended", "Suspended"),
        (
            "Succeeded",
            {"message": "all steps completed"},
            "Healthy",
            "all steps completed",
        ),
        (
            "Failed",
            {
                "message": "step charge: HTTP 502",
                "conditions": succeeded_condition("False", "StepFailed", "step charge: HTTP 502"),
            },
            "Degraded",
            "Failed: step charge: HTTP 502",
        ),
        ("Cancelled", {"message": "cancelled by user"}, "Degraded", "Cancelled: cancelled by"),
        (
            "Invalid",
            {"conditions": succeeded_condition("False", "Invalid", "spec.steps[greet].set: bad")},
            "Degraded",
            "Invalid: spec.steps[greet].set: bad",
        ),
        ("Compensating", {}, "Progressing", "Compensating"),  # a phase added later
    ],
)
def test_workflow_health_follows_the_phase(
    phase: str | None, extra: dict[str, Any], verdict: str, says: str
) -> None:
    hs = health("workflow", workflow(phase, **extra))
    assert hs["status"] == verdict
    assert says in hs["message"]


def test_a_status_of_an_older_generation_is_progressing() -> None:
    obj = workflow("Succeeded")
    obj["metadata"]["generation"] = 2
    assert health("workflow", obj)["status"] == "Progressing"


@pytest.mark.parametrize(
    ("status", "verdict", "says"),
    [
        (None, "Progressing", "Waiting for the operator"),
        ({"phase": "Ready", "version": 7, "observedGeneration": 1}, "Healthy", "version 7"),
        (
            {"phase": "Invalid", "message": "type shop-cart not found", "observedGeneration": 1},
            "Degraded",
            "type shop-cart not found",
        ),
        ({"phase": "Ready", "observedGeneration": 0}, "Progressing", "generation 1"),
    ],
)
def test_entity_health_follows_the_phase(
    status: dict[str, Any] | None, verdict: str, says: str
) -> None:
    obj: dict[str, Any] = {"kind": "Entity", "metadata": {"name": "cart-1", "generation": 1}}
    if status is not None:
        obj["status"] = status
    hs = health("entity", obj)
    assert hs["status"] == verdict
    assert says in hs["message"]


def test_argocd_cm_snippet_embeds_the_lua_files_verbatim() -> None:
    data = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())["data"]
    for kind in ("Workflow", "Entity"):
        lua = (ARGOCD / f"health-{kind.lower()}.lua").read_text()
        assert data[f"resource.customizations.health.kurable.dev_{kind}"] == lua
