"""The chart README's values table, generated from values.schema.json (descriptions,
types) and values.yaml (defaults).

    python hack/chart_values.py          # rewrite the table in charts/kurable/README.md
    python hack/chart_values.py --check  # exit 1 when the README's table is stale

The table sits between the README's `<!-- values:begin -->` and `<!-- values:end -->`
lines; tests/unit/chart/test_chart_values.py fails when it drifts from the schema or
when a value has no description.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "charts" / "kurable"
BEGIN = "<!-- values:begin -->"
END = "<!-- values:end -->"
HELM_OWN = ("global",)
"""Values Helm itself defines: not the chart's to document."""


def values(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every value the schema declares, as (dotted path, its schema), depth first."""
    for key, node in (schema.get("properties") or {}).items():
        full = f"{path}.{key}" if path else key
        if full in HELM_OWN:
            continue
        yield full, node
        yield from values(node, full)


def undocumented(schema: dict[str, Any]) -> list[str]:
    """The values without a description."""
    return [path for path, node in values(schema) if not node.get("description")]


def table(schema: dict[str, Any], defaults: dict[str, Any]) -> str:
    """The Markdown table: value, type, default, description."""
    lines = ["| value | type | default | description |", "|---|---|---|---|"]
    for path, node in values(schema):
        default = _default(defaults, path) if "properties" not in node else None
        shown = "" if default is None else f"`{json.dumps(default)}`"
        description = str(node.get("description", "")).replace("|", "\\|")
        lines.append(f"| `{path}` | {_type(node)} | {shown} | {description} |")
    return "\n".join(lines)


def render(readme: str, schema: dict[str, Any], defaults: dict[str, Any]) -> str:
    """`readme` with the table between its markers replaced."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"charts/kurable/README.md needs the lines {BEGIN} and {END}")
    return f"{head}{BEGIN}\n{table(schema, defaults)}\n{END}{tail}"


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(str(option.get("type")) for option in node["oneOf"])
    kind = node.get("type", "any")
    return " or ".join(kind) if isinstance(kind, list) else str(kind)


def _default(defaults: dict[str, Any], path: str) -> Any:
    node: Any = defaults
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args()
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = undocumented(schema)
    if missing:
        print(f"values.schema.json: no description for {', '.join(missing)}", file=sys.stderr)
        return 1
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    wanted = render(readme, schema, defaults)
    if args.check:
        if wanted != readme:
            print("charts/kurable/README.md: stale values table (run hack/chart_values.py)")
            return 1
        return 0
    readme_path.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
