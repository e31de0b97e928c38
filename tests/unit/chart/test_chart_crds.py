"""The chart ships a copy of the generated crds/ (`make crds` syncs it)."""

from __future__ import annotations

from tests.conftest import ROOT

CHART_CRDS = ROOT / "charts" / "kurable" / "files" / "crds"


def test_the_charts_crds_are_the_generated_ones() -> None:
    generated = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_text() for p in CHART_CRDS.glob("*.yaml")}
    assert generated, "crds/ is empty: run `make crds`"
    assert shipped == generated, "charts/kurable/files/crds drifted from crds/: run `make crds`"
