"""The CRDs are generated from the models, committed, and structural."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kurable.api import crd
from kurable.api.v1alpha1 import KINDS, parse_duration
from tests.conftest import ROOT


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_committed_crd_matches_the_models(kind: Any) -> None:
    path = ROOT / "crds" / crd.file_name(kind)
    assert path.exists(), f"{path} is missing: run `make crds`"
    assert path.read_text() == crd.render(kind), f"{path} drifted from the models: `make crds`"


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        out.append((path, node))
        for key, value in node.items():
            out.extend(_walk(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.extend(_walk(value, f"{path}[{i}]"))
    return out


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.kind)
def test_schema_is_structural(kind: Any) -> None:
    schema = crd.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "$defs", "default"):
            if path.endswith(".properties") and forbidden == "default":
                continue  # a field named `default` (a View query parameter's)
            assert forbidden not in node, f"{kind.kind}{path} has {forbidden}"
        if path.endswith(".properties") or path.endswith("x-kubernetes-validations"):
            continue
        is_schema = "description" in node or "type" in node or "properties" in node
        if is_schema and "type" not in node:
            assert node.get("x-kubernetes-preserve-unknown-fields"), f"{kind.kind}{path}: no type"


def test_every_kind_has_status_subresource_printer_columns_and_short_names() -> None:
    for kind in KINDS:
        version = crd.crd(kind)["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        names = {c["name"] for c in version["additionalPrinterColumns"]}
        # A kind with a phase shows it; a Schedule has none (it shows its ticks instead).
        assert names >= ({"Phase", "Age"} if "phase" in kind.status.model_fields else {"Age"})
        assert crd.crd(kind)["spec"]["names"]["shortNames"]


def test_schedule_columns_show_cadence_suspension_ticks_and_active_runs() -> None:
    (schedule,) = [k for k in KINDS if k.kind == "Schedule"]
    columns = crd.crd(schedule)["spec"]["versions"][0]["additionalPrinterColumns"]
    shown = [c["name"] for c in columns if not c.get("priority")]
    assert shown == ["Schedule", "Suspended", "Last", "Next", "Active", "Age"]


def test_workflow_columns_show_phase_reason_template_step_and_age_and_times_when_wide() -> None:
    (workflow,) = [k for k in KINDS if k.kind == "Workflow"]
    columns = crd.crd(workflow)["spec"]["versions"][0]["additionalPrinterColumns"]
    shown = [c["name"] for c in columns if not c.get("priority")]
    assert shown == ["Phase", "Reason", "Template", "Step", "Attempts", "Done", "Age"]
    wide = {c["name"]: c for c in columns if c.get("priority") == 1}
    assert wide["Started"]["type"] == wide["Finished"]["type"] == "date"


def test_workflow_short_name_is_kwf_only_not_argos_wf() -> None:
    (workflow,) = [k for k in KINDS if k.kind == "Workflow"]
    assert crd.crd(workflow)["spec"]["names"]["shortNames"] == ["kwf"]


def test_status_declares_kopf_bookkeeping_so_it_is_not_pruned() -> None:
    for kind in KINDS:
        status = crd.crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
            "status"
        ]
        assert status["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True


def test_rendered_yaml_round_trips() -> None:
    for kind in KINDS:
        assert yaml.safe_load(crd.render(kind)) == crd.crd(kind)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("30s", 30), ("5m", 300), ("1h30m", 5400), ("2d", 172800), ("1.5s", 1.5)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "5", "5 parsecs", "-1s", "1h 30m", "s"])
def test_parse_duration_refuses_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)
