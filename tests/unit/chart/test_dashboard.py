"""The Grafana dashboard in charts/kurable/dashboards/ charts only metrics Kurable has."""

from __future__ import annotations

import json
import re

from prometheus_client import REGISTRY

import kurable.endpoint._metrics
import kurable.executor.metrics  # registers the operator's families
from tests.conftest import ROOT

DASHBOARDS = sorted((ROOT / "charts" / "kurable" / "dashboards").glob("*.json"))
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def families() -> set[str]:
    """Every kurable_ sample name the process exposes (counters with `_total`)."""
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("kurable_"):
            names.add(family.name)
            names.update(sample.name for sample in family.samples)
            if family.type == "counter":
                names.add(family.name + "_total")
            if family.type == "histogram":
                names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
    return names


def test_every_expression_of_the_dashboards_names_metrics_that_exist() -> None:
    assert kurable.endpoint._metrics.REQUESTS is not None
    assert DASHBOARDS, "no dashboard in charts/kurable/dashboards"
    known = families()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        expressions = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
        assert expressions, path
        for expr in expressions:
            used = set(re.findall(r"\bkurable_[a-z_]+\b", expr))
            assert used, expr
            assert used <= known, f"{path.name}: {expr} uses {sorted(used - known)}"


def test_every_metric_family_is_charted() -> None:
    charted = " ".join(
        t["expr"]
        for path in DASHBOARDS
        for p in json.loads(path.read_text())["panels"]
        for t in p.get("targets", [])
    )
    for family in REGISTRY.collect():
        if family.name.startswith("kurable_"):
            assert family.name in charted, f"{family.name} is on no panel"
