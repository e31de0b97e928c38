"""The chart's values: every one described in values.schema.json, the README's table
generated from it, and the schema's patterns anchored."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

import jsonschema
import pytest
import yaml

from tests.conftest import ROOT

CHART = ROOT / "charts" / "kurable"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_values", ROOT / "hack/chart_values.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def schema() -> dict[str, object]:
    loaded: dict[str, object] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def test_every_value_has_a_description() -> None:
    assert generator().undocumented(schema()) == []


def test_the_readme_values_table_is_the_one_generated_from_the_schema() -> None:
    hack = generator()
    readme = (CHART / "README.md").read_text()
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert hack.render(readme, schema(), defaults) == readme, "run hack/chart_values.py"


def test_the_readme_table_names_every_value() -> None:
    hack = generator()
    readme = (CHART / "README.md").read_text()
    for path, _ in hack.values(schema()):
        assert f"| `{path}` |" in readme


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("", True),
        ("kurable-peers", True),
        ("p", True),
        ("Bad", False),
        ("-bad", False),
        ("bad-", False),
        ("has space", False),
        ("ok.not", False),
    ],
)
def test_peering_name_must_be_a_whole_dns_label(name: str, valid: bool) -> None:
    node = schema()["properties"]["peering"]["properties"]["name"]  # type: ignore[index]
    errors = list(jsonschema.Draft7Validator(node).iter_errors(name))
    assert (not errors) == valid, errors


def test_defaults_meet_the_schema() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(schema()).validate(defaults)
